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
"""

import os

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


def cpu_sample(root):
    """CPU and scheduling totals of the tree, now.

    cpu_ns comes from schedstat (nanoseconds on a CPU, per thread): precise
    even when summed over 10,000 processes. wait_ns, also from schedstat, is
    the time threads were ready to run but waited for a CPU: on a machine
    shared with other work it shows how much of a window was lost to it. The user/system split comes from
    /proc/PID/stat, whose clock ticks (1/100 s) are too coarse for that sum
    but fine for a ratio. Context switches are per thread in
    /proc/PID/task/TID/status (/proc/PID/status has the main thread's only).
    """
    total = {"cpu_ns": 0, "wait_ns": 0, "user_ticks": 0, "system_ticks": 0,
             "voluntary_switches": 0, "involuntary_switches": 0,
             "processes": 0, "tasks": 0}
    for pid in process_tree(root):
        text = _read(f"/proc/{pid}/stat")
        if text is None:
            continue
        fields = _stat_fields(text)
        total["processes"] += 1
        total["user_ticks"] += int(fields[11])
        total["system_ticks"] += int(fields[12])
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


def cpu_delta(before, after):
    """What the tree spent between two cpu_samples."""
    cpu_s = (after["cpu_ns"] - before["cpu_ns"]) / 1e9
    ticks_user = after["user_ticks"] - before["user_ticks"]
    ticks_system = after["system_ticks"] - before["system_ticks"]
    ticks = ticks_user + ticks_system
    user_share = ticks_user / ticks if ticks > 0 else 0.5
    return {
        "cpu_s": cpu_s,
        "wait_s": (after.get("wait_ns", 0) - before.get("wait_ns", 0)) / 1e9,
        "cpu_user_s": cpu_s * user_share,
        "cpu_system_s": cpu_s * (1 - user_share),
        "voluntary_switches":
            after["voluntary_switches"] - before["voluntary_switches"],
        "involuntary_switches":
            after["involuntary_switches"] - before["involuntary_switches"],
    }


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
