/* The context switch for x86-64 (System V ABI).
 *
 * void coro_switch(void **save_sp, void *load_sp)
 *   rdi: where to save this side's stack pointer; rsi: the other side's.
 *
 * A switch is a function call that returns on another stack. The caller
 * has already saved what the ABI lets a call destroy (rax, rcx, rdx, rsi,
 * rdi, r8-r11, the vector registers); what a call must preserve is pushed
 * here: rbx, rbp, r12-r15. Then the stack pointer is swapped, the other
 * side's registers popped, and `ret` returns to wherever the other side
 * called coro_switch from. (The x87 control word and MXCSR are
 * callee-saved too; nothing in this program changes them, so they are not
 * switched.)
 *
 * A new coroutine's stack is laid out (coro.c) as if it had called
 * coro_switch from coro_trampoline: its `ret` lands there, with the
 * coroutine in r12 and the stack 16-byte aligned. */
	.text
	.globl	coro_switch
	.type	coro_switch, @function
	.p2align 4
coro_switch:
	.cfi_startproc
/* slide: switch */
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	ret
/* end slide */
	.cfi_endproc
	.size	coro_switch, .-coro_switch

/* A new coroutine's first instruction: coro_entry(coro) never returns.
 * Marking the return address undefined ends backtraces here. */
	.globl	coro_trampoline
	.type	coro_trampoline, @function
	.p2align 4
coro_trampoline:
	.cfi_startproc
	.cfi_undefined rip
	movq	%r12, %rdi
	call	coro_entry
	ud2
	.cfi_endproc
	.size	coro_trampoline, .-coro_trampoline

	.section .note.GNU-stack,"",@progbits
