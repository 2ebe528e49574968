/* The context switch for aarch64 (AAPCS64).
 *
 * void coro_switch(void **save_sp, void *load_sp)
 *   x0: where to save this side's stack pointer; x1: the other side's.
 *
 * A switch is a function call that returns on another stack. What a call
 * must preserve is stored on this side's stack: x19-x28, the frame
 * pointer x29, the link register x30 (where to return), and the low
 * halves d8-d15 of v8-v15. Then the stack pointer is swapped, the other
 * side's registers loaded, and `ret` returns through its x30.
 *
 * A new coroutine's stack is laid out (coro.c) as if it had called
 * coro_switch: its x30 is coro_trampoline, its x19 the coroutine. */
	.text
	.globl	coro_switch
	.type	coro_switch, %function
	.p2align 4
coro_switch:
	.cfi_startproc
	sub	sp, sp, #160
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mov	x9, sp
	str	x9, [x0]
	mov	sp, x1
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #160
	ret
	.cfi_endproc
	.size	coro_switch, .-coro_switch

/* A new coroutine's first instruction: coro_entry(coro) never returns. */
	.globl	coro_trampoline
	.type	coro_trampoline, %function
	.p2align 4
coro_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	mov	x0, x19
	bl	coro_entry
	brk	#0
	.cfi_endproc
	.size	coro_trampoline, .-coro_trampoline

	.section .note.GNU-stack,"",%progbits
