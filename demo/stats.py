#!/usr/bin/env python3
"""A live view of one chat server: its processes or threads, memory, CPU.

    python3 demo/stats.py PID [--port PORT] [--interval 1] [--once]

Every second, from /proc only: the server process and its children (the
forking model has one child per connection), the threads of each (the
threaded model has one per connection), the connections on its port, the
memory of the whole tree (RSS counts shared pages once per process; PSS
splits them, so its sum is the real cost), the kernel memory the system
grew by since the start (stacks, page tables, slab: where a task and a
socket cost the kernel), and the CPU the tree used. A bar chart shows the
task count over the last minute, so growth and shrinkage are visible.

Stops when the process is gone (or after --duration seconds).
"""

import argparse
import os
import shutil
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BLOCKS = " ▁▂▃▄▅▆▇█"


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid):
    """(name, state, ppid, utime+stime ticks, threads) of a process."""
    text = read(f"/proc/{pid}/stat")
    if not text:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return (name, fields[0], int(fields[1]),
            int(fields[11]) + int(fields[12]), int(fields[17]))


def children_of(pid):
    """Direct children, from /proc/PID/task/*/children (or a scan)."""
    kids = []
    tasks = f"/proc/{pid}/task"
    try:
        for tid in os.listdir(tasks):
            text = read(f"{tasks}/{tid}/children")
            if text is None:
                raise OSError
            kids.extend(int(k) for k in text.split())
        return kids
    except OSError:
        pass
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields and fields[2] == pid:
                kids.append(int(name))
    return kids


def memory_of(pid, want_pss):
    """(rss, pss) bytes of one process; pss None when not asked."""
    rss = pss = None
    statm = read(f"/proc/{pid}/statm")
    if statm:
        rss = int(statm.split()[1]) * PAGE
    if want_pss:
        rollup = read(f"/proc/{pid}/smaps_rollup")
        if rollup:
            for line in rollup.splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    return rss, pss


def meminfo():
    values = {}
    for line in (read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("KernelStack", "PageTables", "Slab", "MemAvailable"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def connections(port):
    """ESTABLISHED TCP connections whose local port is `port`."""
    if not port:
        return None
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read(table) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def size(n):
    if n is None:
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else \
                f"{sign}{n:.1f} {unit}"
        n /= 1024


def spark(values, width, ascii_only):
    values = values[-width:]
    top = max(values) if values and max(values) > 0 else 1
    if ascii_only:
        marks = " .:-=+*#%@"
    else:
        marks = BLOCKS
    return "".join(marks[min(len(marks) - 1, round(v / top *
                                                   (len(marks) - 1)))]
                   for v in values)


class Watcher:
    def __init__(self, pid, port, ascii_only):
        self.pid = pid
        self.port = port
        self.ascii = ascii_only
        self.start = time.monotonic()
        self.kernel_start = meminfo()
        self.last_ticks = {}
        self.last_time = None
        self.history = []
        self.peak = 0
        self.pss_every = 1  # grows when reading PSS gets slow
        self.pss_last = None
        self.rounds = 0
        self.base = None  # (PSS, connections) at the first PSS reading

    def sample(self):
        top = stat_fields(self.pid)
        if not top or top[1] == "Z":
            return None
        tree = [self.pid]
        kids = children_of(self.pid)
        tree.extend(kids)
        # grandchildren too (a child that forked), one level more
        for kid in kids[:]:
            tree.extend(children_of(kid))
        now = time.monotonic()
        threads = 0
        ticks = {}
        rss_sum = 0
        want_pss = self.rounds % self.pss_every == 0
        pss_sum = 0 if want_pss else None
        pss_started = time.monotonic()
        for pid in tree:
            fields = stat_fields(pid)
            if not fields:
                continue
            threads += fields[4]
            ticks[pid] = fields[3]
            rss, pss = memory_of(pid, want_pss)
            rss_sum += rss or 0
            if want_pss and pss is not None:
                pss_sum += pss
        if want_pss:
            took = time.monotonic() - pss_started
            self.pss_every = 1 if took < 0.2 else 2 if took < 0.5 else 5
            self.pss_last = pss_sum
        cpu = None
        if self.last_time is not None:
            used = sum(t - self.last_ticks[p] for p, t in ticks.items()
                       if p in self.last_ticks)
            cpu = 100.0 * used / TICKS / (now - self.last_time)
        self.last_ticks, self.last_time = ticks, now
        self.rounds += 1
        tasks = threads
        self.history.append(tasks)
        self.peak = max(self.peak, tasks)
        return {"name": top[0], "processes": len(ticks),
                "children": len(kids), "threads": threads, "cpu": cpu,
                "rss": rss_sum, "pss": self.pss_last,
                "connections": connections(self.port),
                "kernel": meminfo()}

    def render(self, s):
        width = min(shutil.get_terminal_size((80, 24)).columns, 100)
        up = int(time.monotonic() - self.start)
        lines = []
        say = lines.append
        say(f"{s['name']} (pid {self.pid})"
            f"{' on port ' + str(self.port) if self.port else ''}"
            f"   {time.strftime('%H:%M:%S')}   watching {up // 60}m{up % 60:02d}s")
        say("-" * min(width, 72))
        say(f"processes   {s['processes']:>6}   (the server"
            f"{' + ' + str(s['children']) + ' children' if s['children'] else ''})")
        say(f"threads     {s['threads']:>6}   (kernel tasks, all processes)")
        if s["connections"] is not None:
            say(f"connections {s['connections']:>6}   (established on the port, "
                "accepted or still queued)")
        say("")
        # Two figures per connection, which differ: all the memory over the
        # connections (the server's fixed cost included: large while few
        # are connected), and the growth per connection since this view
        # started, which is what the benchmark reports (bench/README.md).
        pss, conns = s["pss"], s["connections"]
        if self.base is None and pss is not None and conns is not None:
            self.base = (pss, conns)
        per = ""
        if pss is not None and conns:
            per = f"   {size(pss / conns)}/connection = total / connections"
        say(f"memory  PSS {size(pss):>10}{per}")
        if self.base is not None and pss is not None and conns is not None:
            grown, more = pss - self.base[0], conns - self.base[1]
            if abs(more) >= 10:
                say(f"        growth {size(grown)} for {more:+d} connections"
                    f" = {size(grown / more)}/connection")
            else:
                say("        growth per connection: once 10 more connect")
            say("        (the benchmark's figure is the growth per "
                "connection)")
        say(f"        RSS {size(s['rss']):>10}   (sum: shared pages counted "
            "once per process)")
        k0, k1 = self.kernel_start, s["kernel"]
        say("kernel  (the whole system's growth since this view started)")
        say("        " + "  ".join(
            f"{key} {'+' if k1.get(key, 0) >= k0.get(key, 0) else ''}"
            f"{size(k1.get(key, 0) - k0.get(key, 0))}"
            for key in ("KernelStack", "PageTables", "Slab")))
        cpu = "..." if s["cpu"] is None else f"{s['cpu']:.1f} %"
        say(f"CPU     {cpu:>10}   (of one core; {os.cpu_count()} here)")
        say("")
        chart = max(10, min(width, 72) - 14)
        say(f"tasks, last {chart} s (peak {self.peak}):")
        say("  |" + spark(self.history, chart, self.ascii) + "|")
        say("")
        say("Ctrl-C stops this view; kill a child or a thread: demo/README.md")
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description="Live /proc view of a chat server (demo/README.md).")
    parser.add_argument("pid", type=int)
    parser.add_argument("--port", type=int, default=None,
                        help="count connections on this port")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (0: until the "
                             "server is gone)")
    parser.add_argument("--once", action="store_true",
                        help="print two samples a second apart, no screen "
                             "clearing")
    parser.add_argument("--ascii", action="store_true",
                        help="ASCII bars (default: Unicode blocks unless the "
                             "locale is not UTF-8)")
    args = parser.parse_args()
    encoding = (sys.stdout.encoding or "").lower()
    watcher = Watcher(args.pid, args.port,
                      args.ascii or "utf" not in encoding)
    deadline = time.monotonic() + args.duration if args.duration else None
    first = True
    try:
        while True:
            s = watcher.sample()
            if s is None:
                print(f"\nprocess {args.pid} is gone.")
                return 0
            if args.once:
                if not first:
                    print(watcher.render(s))
                    return 0
            else:
                sys.stdout.write("\x1b[H\x1b[2J" + watcher.render(s) + "\n")
                sys.stdout.flush()
            first = False
            if deadline and time.monotonic() >= deadline:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
