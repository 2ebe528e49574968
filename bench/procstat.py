"""Server-side measurements from /proc, summed over a whole process tree.

A server model may be one process (evented), one process with a thread per
connection (threaded), or a parent with a child process per connection
(forking). To compare them, every figure here is the sum over the server's
process tree and all the threads in it:

  cpu_sample(root)     CPU time and context switches, read at the edges of a
                       measured window (cheap: /proc/PID/task/TID/schedstat
                       and status for each thread).
  memory_sample(root)  PSS and RSS from /proc/PID/smaps_rollup, page
                       tables (VmPTE) and the task count, and the kernel's
                       counters (/proc/meminfo, /proc/net/sockstat), read
                       when the server is idle and again when it holds N
                       idle connections.

PSS (proportional set size) divides each shared page among the processes
that map it, so summing PSS over 10,000 forked children counts libc and the
shared room once; summing RSS would count them 10,000 times (both are kept).
Kernel memory: a task's kernel stack and a process's page tables belong to
the server alone (tasks x kernel_stack_size(), VmPTE). Socket memory (Slab)
is only known system-wide: its delta includes the load generator's own end
of every loopback connection (the same for every model) and whatever else
the machine did meanwhile.

  SyscallCounter       system calls of the tree, counted by the kernel: one
                       perf counter (the raw_syscalls:sys_enter tracepoint,
                       opened with perf_event_open through ctypes) per task,
                       read at the edges of a window; where perf cannot be
                       used, the read- and write-class calls of
                       /proc/PID/io (syscr + syscw) stand in, and say so.
"""

import ctypes
import os
import platform
import resource
import struct

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _stat_fields(text):
    """The fields of /proc/PID/stat after the command name, which may hold
    spaces and parentheses: field 3 (state) is index 0."""
    return text[text.rindex(")") + 2:].split()


def process_tree(root):
    """The pids of root and all its descendants, found through each
    process's parent pid (one pass over /proc)."""
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        text = _read(f"/proc/{entry.name}/stat")
        if text is None:
            continue
        ppid = int(_stat_fields(text)[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _task_ids(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return []


def cpu_sample(root, io=False, tree=True):
    """CPU and scheduling totals of the tree, now.

    cpu_ns comes from schedstat (nanoseconds on a CPU, per thread): precise
    even when summed over 10,000 processes. wait_ns, also from schedstat, is
    the time threads were ready to run but waited for a CPU: on a machine
    shared with other work it shows how much of a window was lost to it. The user/system split comes from
    /proc/PID/stat, whose clock ticks (1/100 s) are too coarse for that sum
    but fine for a ratio. Context switches are per thread in
    /proc/PID/task/TID/status (/proc/PID/status has the main thread's only).
    Page faults (minor: no I/O; major: read from disk) are per process in
    /proc/PID/stat, its threads included. With io, also /proc/PID/io's
    syscr + syscw (read- and write-class system calls only). With
    tree=False, root alone (not its descendants: the sweep's own CPU).
    """
    total = {"cpu_ns": 0, "wait_ns": 0, "user_ticks": 0, "system_ticks": 0,
             "voluntary_switches": 0, "involuntary_switches": 0,
             "minor_faults": 0, "major_faults": 0,
             "processes": 0, "tasks": 0}
    if io:
        total["io_syscalls"] = 0
    for pid in (process_tree(root) if tree else [root]):
        text = _read(f"/proc/{pid}/stat")
        if text is None:
            continue
        fields = _stat_fields(text)
        total["processes"] += 1
        total["minor_faults"] += int(fields[7])
        total["major_faults"] += int(fields[9])
        total["user_ticks"] += int(fields[11])
        total["system_ticks"] += int(fields[12])
        if io:
            # The process's read- and write-class system calls (all its
            # threads, live and ended): the fallback when perf cannot count.
            for line in (_read(f"/proc/{pid}/io") or "").splitlines():
                if line.startswith(("syscr:", "syscw:")):
                    total["io_syscalls"] += int(line.split()[1])
        for tid in _task_ids(pid):
            sched = _read(f"/proc/{pid}/task/{tid}/schedstat")
            status = _read(f"/proc/{pid}/task/{tid}/status")
            if sched is None or status is None:
                continue
            total["tasks"] += 1
            on_cpu, waiting = sched.split()[:2]
            total["cpu_ns"] += int(on_cpu)
            total["wait_ns"] += int(waiting)
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total["voluntary_switches"] += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    total["involuntary_switches"] += int(line.split()[1])
    return total


def _add(total, sample):
    for key, value in sample.items():
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            _add(total.setdefault(key, {}), value)


def cpu_sample_many(roots, io=False):
    """cpu_sample summed over several trees (a cluster's servers)."""
    total = {}
    for root in roots:
        _add(total, cpu_sample(root, io))
    return total


def memory_sample_many(roots):
    """memory_sample summed over several trees; the system-wide kernel
    counters once (read after the last tree)."""
    total = {}
    for root in roots:
        sample = memory_sample(root)
        kernel = sample.pop("kernel")
        _add(total, sample)
    total["kernel"] = kernel if roots else system_memory()
    return total


def system_cpu_times():
    """Per CPU, from /proc/stat, in clock ticks: {"0": {"busy": ticks,
    "idle": ticks, "softirq": ticks}, ...}. Busy is user + nice + system +
    irq + softirq + steal (guest time is inside user); idle is idle +
    iowait. Where the cores' time went, beside the trees' own CPU."""
    cpus = {}
    for line in (_read("/proc/stat") or "").splitlines():
        words = line.split()
        if not words or not words[0].startswith("cpu") or words[0] == "cpu":
            continue
        values = [int(v) for v in words[1:]] + [0] * 10
        user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
        cpus[words[0][3:]] = {
            "busy": user + nice + system + irq + softirq + steal,
            "idle": idle + iowait, "softirq": softirq + irq}
    return {"ticks_per_s": CLOCK_TICKS, "cpus": cpus}


def socket_count(root):
    """Distinct sockets the tree holds open (a server's listening sockets,
    its clients', its Redis connections): read once, with N connected, to
    see how the kernel spread the clients over a cluster's servers."""
    inodes = set()
    for pid in process_tree(root):
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:"):
                inodes.add(target)
    return len(inodes)


def cpu_delta(before, after):
    """What the tree spent between two cpu_samples."""
    cpu_s = (after["cpu_ns"] - before["cpu_ns"]) / 1e9
    ticks_user = after["user_ticks"] - before["user_ticks"]
    ticks_system = after["system_ticks"] - before["system_ticks"]
    ticks = ticks_user + ticks_system
    user_share = ticks_user / ticks if ticks > 0 else 0.5
    delta = {
        "cpu_s": cpu_s,
        "wait_s": (after.get("wait_ns", 0) - before.get("wait_ns", 0)) / 1e9,
        "cpu_user_s": cpu_s * user_share,
        "cpu_system_s": cpu_s * (1 - user_share),
        "voluntary_switches":
            after["voluntary_switches"] - before["voluntary_switches"],
        "involuntary_switches":
            after["involuntary_switches"] - before["involuntary_switches"],
    }
    for key in ("minor_faults", "major_faults", "io_syscalls"):
        if key in before and key in after:  # not in older runs.json
            delta[key] = after[key] - before[key]
    return delta


MEMINFO_FIELDS = ("MemAvailable", "KernelStack", "PageTables", "Slab",
                  "SReclaimable", "SUnreclaim")


def system_memory():
    """Kernel memory counters, in bytes (meminfo) and sockets (sockstat)."""
    result = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key in MEMINFO_FIELDS:
            result[key] = int(value.split()[0]) * 1024
    for line in (_read("/proc/net/sockstat") or "").splitlines():
        words = line.split()
        if words[:1] == ["sockets:"]:
            result["sockets_used"] = int(words[2])
        elif words[:1] == ["TCP:"]:
            pairs = dict(zip(words[1::2], words[2::2]))
            result["tcp_inuse"] = int(pairs.get("inuse", 0))
            result["tcp_alloc"] = int(pairs.get("alloc", 0))
            result["tcp_mem_bytes"] = int(pairs.get("mem", 0)) * PAGE_SIZE
    return result


def kernel_stack_size():
    """Bytes of kernel stack per task: KernelStack over every task on the
    machine (16 KiB on x86-64). Every thread of every model costs one."""
    tasks = sum(len(_task_ids(e.name)) for e in os.scandir("/proc")
                if e.name.isdigit())
    stacks = system_memory().get("KernelStack", 0)
    if tasks == 0 or stacks == 0:
        return 4 * PAGE_SIZE
    # Round to whole pages: the ratio is exact unless tasks came and went
    # between the two reads.
    return max(1, round(stacks / tasks / PAGE_SIZE)) * PAGE_SIZE


def memory_sample(root):
    """User-space memory of the tree (bytes), its page tables (VmPTE, bytes)
    and task count, plus the system's kernel memory counters at the same
    moment. Page tables and kernel stacks are the server's own; the
    system-wide counters also move with everything else on the machine."""
    total = {"pss": 0, "rss": 0, "page_tables": 0, "processes": 0,
             "tasks": 0}
    for pid in process_tree(root):
        rollup = _read(f"/proc/{pid}/smaps_rollup")
        status = _read(f"/proc/{pid}/status")
        if rollup is None or status is None:
            continue
        total["processes"] += 1
        total["tasks"] += len(_task_ids(pid))
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total["pss"] += int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                total["rss"] += int(line.split()[1]) * 1024
        for line in status.splitlines():
            if line.startswith("VmPTE:"):
                total["page_tables"] += int(line.split()[1]) * 1024
    total["kernel"] = system_memory()
    return total


# ---------------------------------------------------------------------------
# System calls, counted by the kernel

# perf_event_open(2) by architecture (no libc wrapper exists).
_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241,
                    "ppc64le": 319, "s390x": 331, "i686": 336, "armv7l": 364}
_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 8
_TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# The calls the models spend their time in, counted one by one when the
# tree has few enough tasks (every counter is one descriptor per task).
# The rest is total - their sum ("other").
BREAKDOWN = ("read", "readv", "recvfrom", "recvmsg", "write", "writev",
             "sendto", "sendmsg", "epoll_wait", "epoll_pwait", "epoll_ctl",
             "poll", "ppoll", "futex", "sched_yield", "accept4", "mmap",
             "munmap", "madvise", "brk")


def _tracepoint_id(name):
    for root in _TRACEFS:
        try:
            with open(f"{root}/events/{name}/id") as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    return None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _open_counter(config, tid):
    """A counting perf event on one task (and the tasks it creates later:
    inherit), on any CPU. Returns the descriptor; raises OSError."""
    number = _PERF_EVENT_OPEN.get(platform.machine())
    if number is None:
        raise OSError(0, f"perf_event_open: unknown on {platform.machine()}")
    # struct perf_event_attr as of PERF_ATTR_SIZE_VER0 (64 bytes): type,
    # size, config, sample_period, sample_type, read_format, the flag bits
    # (bit 1: inherit), wakeup_events, bp_type, config1.
    attr = ctypes.create_string_buffer(struct.pack(
        "=IIQQQQQIIQ", _PERF_TYPE_TRACEPOINT, 64, config, 0, 0, 0, 1 << 1,
        0, 0, 0), 64)
    fd = _libc.syscall(ctypes.c_long(number), attr, ctypes.c_int(tid),
                       ctypes.c_int(-1), ctypes.c_int(-1),
                       ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"perf_event_open: {os.strerror(error)}")
    return fd


def perf_unavailable():
    """None when perf can count system calls here, else why not."""
    if _tracepoint_id("raw_syscalls/sys_enter") is None:
        return ("no tracefs (raw_syscalls/sys_enter) under " +
                " or ".join(_TRACEFS))
    try:
        os.close(_open_counter(_tracepoint_id("raw_syscalls/sys_enter"),
                               os.getpid()))
    except OSError as error:
        return f"{error.strerror} (kernel.perf_event_paranoid is " \
               f"{(_read('/proc/sys/kernel/perf_event_paranoid') or '?').strip()})"
    return None


class SyscallCounter:
    """System calls made by a process tree, from attach() on.

    One perf counter on the raw_syscalls:sys_enter tracepoint per task of
    the tree (threads and child processes alike), opened with inherit so
    that tasks created later are counted too; read() sums them. While any
    such counter exists the kernel takes its traced system-call path on
    every task of the machine (a fixed cost per call, measured by the sweep
    and stated in the report). When the tree has few tasks, BREAKDOWN's
    calls are counted one by one as well (one counter each per task).

    Where perf cannot count (no tracefs, not permitted, too many tasks for
    the open-file limit), read() falls back to /proc/PID/io's syscr + syscw:
    only the read- and write-class calls (read, readv, write, writev...;
    not epoll, futex, sendmsg or recvmsg), and method says so."""

    def __init__(self, fd_budget=None, breakdown_budget=4096):
        self.fds = []          # (name, fd); name None for the total
        self.method = None
        self.error = None
        self.tasks = 0
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.fd_budget = fd_budget or max(0, soft - 256 -
                                          len(os.listdir("/proc/self/fd")))
        self.breakdown_budget = breakdown_budget

    def attach(self, root):
        """Counters on every task of the tree of root (a pid, or a list of
        pids: the servers of a cluster)."""
        self.roots = list(root) if isinstance(root, (list, tuple)) else [root]
        tids = [(pid, tid) for top in self.roots
                for pid in process_tree(top) for tid in _task_ids(pid)]
        self.tasks = len(tids)
        total_id = _tracepoint_id("raw_syscalls/sys_enter")
        if total_id is None:
            return self._fallback("no tracefs to find the tracepoint in")
        if len(tids) > self.fd_budget:
            return self._fallback(f"{len(tids)} tasks, more counters than "
                                  f"the open-file limit leaves room for")
        events = [(None, total_id)]
        if len(tids) * (1 + len(BREAKDOWN)) <= min(self.fd_budget,
                                                   self.breakdown_budget):
            for name in BREAKDOWN:
                config = _tracepoint_id(f"syscalls/sys_enter_{name}")
                if config is not None:
                    events.append((name, config))
        try:
            for _, tid in tids:
                for name, config in events:
                    try:
                        self.fds.append((name, _open_counter(config, tid)))
                    except OSError as error:
                        if error.errno == 3:  # ESRCH: the task just ended
                            break
                        raise
        except OSError as error:
            self.close()
            return self._fallback(error.strerror or str(error))
        self.method = "perf"
        return self

    def _fallback(self, why):
        self.method = "proc-io"
        self.error = why
        return self

    def read(self, root=None):
        """{"syscalls": total, "by_call": {name: count}} for perf; for the
        fallback the read/write-class count from /proc (needs root)."""
        if self.method == "perf":
            total, by_call = 0, {}
            for name, fd in self.fds:
                value = struct.unpack("=Q", os.read(fd, 8))[0]
                if name is None:
                    total += value
                else:
                    by_call[name] = by_call.get(name, 0) + value
            return {"method": "perf", "syscalls": total, "by_call": by_call}
        if self.method == "proc-io" and root is not None:
            roots = list(root) if isinstance(root, (list, tuple)) else [root]
            return {"method": "proc-io",
                    "io_syscalls": cpu_sample_many(roots, io=True)
                    .get("io_syscalls", 0)}
        return None

    def close(self):
        for _, fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def syscall_delta(before, after):
    """System calls between two SyscallCounter.read()s: {"syscalls": n,
    "by_call": {...}, "method": ...}; None when not comparable."""
    if not before or not after or before.get("method") != after.get("method"):
        return None
    if before["method"] == "perf":
        by_call = {name: after["by_call"].get(name, 0) - count
                   for name, count in before["by_call"].items()}
        return {"method": "perf",
                "syscalls": after["syscalls"] - before["syscalls"],
                "by_call": by_call}
    return {"method": "proc-io",
            "syscalls": after["io_syscalls"] - before["io_syscalls"],
            "by_call": {}}
