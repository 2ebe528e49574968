#!/usr/bin/env python3
"""The benchmark sweep: every server model, side by side, on this machine.

For each model (chat-evented, chat-threaded, chat-forking, whichever are
built, and the Python peers in bench/peers/) and each client count N, it

  1. starts the server on port 0, pinned to its own CPU, and reads the port
     from its startup line;
  2. samples the idle server from /proc (procstat.py);
  3. runs chat-load, pinned to another CPU, which connects and registers N
     clients, then runs the throughput and latency workloads; at each mark
     chat-load prints, the sweep samples the server again, then says "go";
  4. stops the server (SIGTERM, then SIGKILL to its whole process group) and
     the load generator, whatever happened;
  5. records everything (raw samples, chat-load's JSON, exact errors) in
     runs.json, so that report.py can write the CSV, charts and report.

Every phase has a deadline; a model that fails at some N is recorded with the
error and the sweep goes on. Ctrl-C stops the run in progress, kills what it
started and still writes the results gathered so far.

    python3 bench/sweep.py --quick          # about two minutes
    python3 bench/sweep.py --full           # for reports
    python3 bench/sweep.py --models evented,asyncio --clients 10,1000
"""

import argparse
import csv
import ctypes
import datetime
import glob
import json
import os
import platform
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)

# The two modes. Latency is measured at a fixed total delivery rate, split
# over the clients: R = latency_deliveries / N messages per second.
# max_window: how long a throughput window may go on past its duration to
# hold enough to measure (chat-load --max-duration; report.py judges it).
MODES = {
    "quick": {"clients": [10, 100, 1000], "repeats": 1, "warmup": 0.3,
              "duration": 1.0, "max_window": 5.0, "drain": 20.0,
              "connect_base": 60.0},
    "full": {"clients": [10, 100, 1000, 5000, 10000], "repeats": 3,
             "warmup": 1.0, "duration": 5.0, "max_window": 30.0,
             "drain": 60.0, "connect_base": 120.0},
}
# Known models first, in this order; any other chat-* server after them.
MODEL_ORDER = ["evented", "coroutine", "threaded", "forking", "asyncio"]
SERVER_START_TIMEOUT = 15.0
SERVER_STOP_TIMEOUT = 30.0  # docs/PROTOCOL.md says 2 s; wait longer, to measure it
MARK_MARGIN = 60.0  # beyond chat-load's own deadlines, before we give up
IDLE_SETTLE_S = 2.0  # connections idle this long before memory is read


# ---------------------------------------------------------------------------
# What to run


class Model:
    """One server: its short name, how to start it, where it comes from."""

    def __init__(self, name, argv, source, built=False, cluster=0,
                 base=None):
        self.name = name
        self.argv = argv
        self.source = source
        self.built = built  # a chat-* of the build tree, from REPO/NAME/
        self.cluster = cluster  # K servers and a Redis (0: one server)
        self.base = base or name  # the model a cluster is made of

    def __repr__(self):
        return f"Model({self.name})"


def speaks_spec(argv):
    """True when `argv --help` shows docs/PROTOCOL.md's command line: how a chat
    server is told from the other chat-* tools (chat-load, chat-latency)."""
    try:
        out = subprocess.run(argv + ["--help"], capture_output=True,
                             text=True, timeout=15, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and all(
        option in out.stdout for option in ("--max-clients", "--max-backlog",
                                            "--login-timeout"))


def find_models(build_dir, wanted, extra=()):
    """The C servers in build/bin, the Python peers in bench/peers, and any
    server given as --server NAME=COMMAND."""
    found = {}
    for path in sorted(glob.glob(os.path.join(build_dir, "bin", "chat-*"))):
        name = os.path.basename(path)[len("chat-"):]
        if (name != "load" and os.access(path, os.X_OK) and
                speaks_spec([path])):
            found[name] = Model(name, [path], os.path.relpath(path, REPO_DIR),
                                built=True)
    for path in sorted(glob.glob(os.path.join(BENCH_DIR, "peers", "chat_*.py"))):
        name = os.path.basename(path)[len("chat_"):-len(".py")]
        if name not in found and speaks_spec([sys.executable, path]):
            found[name] = Model(name, [sys.executable, path],
                                os.path.relpath(path, REPO_DIR))
    for spec in extra:
        name, _, command = spec.partition("=")
        if not name or not command:
            sys.exit(f"sweep: --server wants NAME=COMMAND, not {spec!r}")
        found[name] = Model(name, command.split(), command)
    order = {name: i for i, name in enumerate(MODEL_ORDER)}
    names = sorted(found, key=lambda n: (order.get(n, len(order)), n))
    if wanted:
        wanted = [w.removeprefix("chat-") for w in wanted]
        wanted += [spec.partition("=")[0] for spec in extra
                   if spec.partition("=")[0] not in wanted]
        missing = [w for w in wanted if w not in found]
        names = [w for w in wanted if w in found]
        return [found[n] for n in names], missing
    return [found[n] for n in names], []


def cluster_models(model, sizes):
    """The cluster variants of a model (sweep --cluster K): NAME-xK, K
    servers of it sharing a port and a room through Redis. Only the C
    servers of the build tree take --redis."""
    if not model.built:
        return []
    return [Model(f"{model.name}-x{k}", model.argv, model.source,
                  built=True, cluster=k, base=model.name) for k in sizes]


def heap_policy(model):
    """Which heap policy a C model runs with, read from the sources it was
    built from: the policy common/os/heap.h states (its first sentence),
    and which of the functions heap.h declares the model's own sources and
    the shared ones (common/) call, and which none calls. None for a model
    whose sources are not here (a peer, a --server)."""
    own = glob.glob(os.path.join(REPO_DIR, model.base, "*.c"))
    header = os.path.join(REPO_DIR, "common", "os", "heap.h")
    if not own or not model.built or \
            not os.path.exists(header):
        return None
    with open(header, errors="replace") as f:
        text = f.read()
    declared = sorted(set(re.findall(r"^\w[\w \t*]*?\b(heap_\w+)\(", text,
                                     re.M)))
    comment = text.split("*/", 1)[0].lstrip("/* ")
    policy = " ".join(line.strip(" *") for line in
                      comment.split("\n *\n", 1)[0].splitlines()).strip()
    common = [p for p in glob.glob(os.path.join(REPO_DIR, "common", "**",
                                                "*.c"), recursive=True)
              if os.path.basename(p) != "heap.c"]
    calls = {}
    for path in own + common:
        with open(path, errors="replace") as f:
            source = f.read()
        for function in declared:
            if re.search(r"\b" + function + r"\(", source):
                calls.setdefault(function, []).append(
                    os.path.relpath(path, REPO_DIR))
    said = "; ".join(f"{function} in " + ", ".join(f"`{p}`" for p in paths)
                     for function, paths in sorted(calls.items()))
    missing = [f for f in declared if f not in calls]
    return (f"{policy} Calls {said or 'none of its functions'}"
            + (f"; never calls {', '.join(missing)}: the policy applies only "
               f"in part" if missing else "") + ".")


# ---------------------------------------------------------------------------
# Limits


def _read_sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().split()
    except OSError:
        return None


def _write_sysctl(name, value):
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(str(value))


def raise_limits(max_clients):
    """Raises what N connections need, in this process (inherited by the
    servers and chat-load) and, when missing, system-wide. Returns the list
    of what was raised and what could not be, for the terminal and report."""
    notes = []

    def rlimit(kind, label, need):
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY and hard < need:
            try:
                resource.setrlimit(kind, (need, need))
                notes.append(f"raised {label} from {soft}/{hard} to {need}")
            except (ValueError, OSError) as error:
                notes.append(f"could not raise {label} to {need} (hard limit "
                             f"{hard}: {error}); some runs may fail")
            return
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(kind, (hard, hard))

    rlimit(resource.RLIMIT_NOFILE, "open files (ulimit -n)", max_clients + 256)
    rlimit(resource.RLIMIT_NPROC, "processes (ulimit -u)", max_clients + 1024)

    tasks_now = int(open("/proc/loadavg").read().split()[3].split("/")[1])
    for name, need in (("kernel.pid_max", tasks_now + max_clients + 1024),
                       ("kernel.threads-max", tasks_now + max_clients + 1024),
                       ("vm.max_map_count", 2 * max_clients + 4096)):
        current = _read_sysctl(name)
        if current is None or int(current[0]) >= need:
            continue
        try:
            _write_sysctl(name, need)
            notes.append(f"raised {name} from {current[0]} to {need}")
        except OSError as error:
            notes.append(f"could not raise {name} from {current[0]} to {need} "
                         f"({error.strerror}); as root: sysctl -w {name}={need}")
    ports = _read_sysctl("net.ipv4.ip_local_port_range")
    if ports and int(ports[1]) - int(ports[0]) + 1 < max_clients:
        notes.append(f"ephemeral ports {ports[0]}-{ports[1]} are fewer than "
                     f"{max_clients}: chat-load spreads clients over several "
                     f"127.0.0.x source addresses")
    return notes


def limits_in_force():
    def rl(kind):
        soft, hard = resource.getrlimit(kind)
        show = lambda v: "unlimited" if v == resource.RLIM_INFINITY else v
        return {"soft": show(soft), "hard": show(hard)}

    sysctls = {}
    for name in ("kernel.pid_max", "kernel.threads-max", "vm.max_map_count",
                 "net.core.somaxconn", "net.ipv4.ip_local_port_range",
                 "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_rmem",
                 "net.ipv4.tcp_wmem", "fs.nr_open", "fs.file-max"):
        value = _read_sysctl(name)
        if value is not None:
            sysctls[name] = " ".join(value)
    return {"RLIMIT_NOFILE": rl(resource.RLIMIT_NOFILE),
            "RLIMIT_NPROC": rl(resource.RLIMIT_NPROC),
            "RLIMIT_STACK": rl(resource.RLIMIT_STACK),
            "sysctl": sysctls}


# ---------------------------------------------------------------------------
# The machine, for the record


def _first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine(build_dir, pinning, usable_cpus):
    cpu_model = None
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory = procstat.system_memory()
    mem_total = None
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    compiler = None
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if os.path.exists(cache):
        for line in open(cache, errors="replace"):
            if line.startswith("CMAKE_C_COMPILER:"):
                compiler = _first_line([line.split("=", 1)[1].strip(),
                                        "--version"])
    os_name = None
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    return {
        "date": datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "os": os_name,
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu": cpu_model,
        "cpus_online": os.cpu_count(),
        "cpus_usable": usable_cpus,
        "memory_bytes": mem_total,
        "memory_available_bytes": memory.get("MemAvailable"),
        "load_average": open("/proc/loadavg").read().split()[:3],
        "compiler": compiler,
        "libevent": _first_line(["pkg-config", "--modversion", "libevent"]),
        "hiredis": _first_line(["pkg-config", "--modversion", "hiredis"]),
        "python": platform.python_version(),
        "gnuplot": _first_line(["gnuplot", "--version"]),
        "git_commit": _first_line(["git", "-C", REPO_DIR, "rev-parse",
                                   "--short", "HEAD"]),
        "git_dirty": bool(_first_line(["git", "-C", REPO_DIR, "status",
                                       "--porcelain", "--untracked-files=no"])),
        "pinning": pinning,
        "kernel_stack_bytes": procstat.kernel_stack_size(),
        "limits": limits_in_force(),
    }


# ---------------------------------------------------------------------------
# What the machine charges: switches, page faults, counted system calls


def _median_of(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2]


def measure_page_fault(pages=8192, tries=5):
    """ns per minor page fault on a private anonymous page (what a heap or a
    forked child's first write costs): first touch of each page minus a
    second touch of the same pages, which takes the loop's own cost out.
    Transparent huge pages are refused, so each touch faults 4 KiB."""
    import mmap
    page = mmap.PAGESIZE
    costs, faults = [], []
    for _ in range(tries):
        area = mmap.mmap(-1, pages * page,
                         flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(area, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
            area.madvise(mmap.MADV_NOHUGEPAGE)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter_ns()
        for offset in range(0, pages * page, page):
            area[offset] = 1
        t1 = time.perf_counter_ns()
        for offset in range(0, pages * page, page):
            area[offset] = 2
        t2 = time.perf_counter_ns()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt -
                      before)
        area.close()
        costs.append(((t1 - t0) - (t2 - t1)) / pages)
    return {"ns": round(_median_of(costs), 1), "min_ns": round(min(costs), 1),
            "faults_per_try": _median_of(faults), "pages_per_try": pages,
            "method": f"first write to each of {pages} private anonymous 4 KiB "
                      f"pages (no huge pages) minus a second write to them, "
                      f"median of {tries}, wall time"}


def measure_syscall_counting(calls=100000, tries=5):
    """ns per system call (getppid) without and with the perf counters the
    sweep attaches (total and per-call breakdown): what counting adds to
    every system call of the machine while the counters exist."""
    def per_call():
        best = []
        for _ in range(tries):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                os.getppid()
            best.append((time.perf_counter_ns() - t0) / calls)
        return _median_of(best)

    plain = per_call()
    counter = procstat.SyscallCounter().attach(os.getpid())
    try:
        if counter.method != "perf":
            return {"plain_ns": round(plain, 1), "counted_ns": None,
                    "error": counter.error}
        counted = per_call()
    finally:
        counter.close()
    return {"plain_ns": round(plain, 1), "counted_ns": round(counted, 1),
            "overhead_ns": round(counted - plain, 1),
            "method": f"os.getppid() in a Python loop, {calls} calls, median "
                      f"of {tries}, without and then with the counters "
                      f"(total and per-call) on this process; the loop's own "
                      f"cost is in both"}


LATENCY_ROWS = ("process_switch", "thread_switch", "fork", "pthread", "epoll")


def read_latency_csv(path):
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("id") in LATENCY_ROWS and row.get("median_ns"):
                rows[row["id"]] = {"event": row["event"],
                                   "median_ns": float(row["median_ns"]),
                                   "method": row.get("method", "")}
    return rows


def machine_costs(config, pinning, out_dir, progress):
    """The costs that decide the process and thread models' figures,
    measured on the server's CPU: a process switch and a thread switch
    (chat-latency's figures: from BUILD/latency/latency.csv when the latency
    target has written it, else a run of chat-latency into the results
    folder), a minor page fault, and what counting system calls adds to each
    one. Each part records its error instead of stopping the sweep."""
    costs = {}
    saved = os.sched_getaffinity(0)
    try:
        if pinning["server"]:
            os.sched_setaffinity(0, pinning["server"])
        progress.note("  measuring the machine: page fault, system call")
        try:
            costs["page_fault"] = measure_page_fault()
        except (OSError, ValueError) as error:
            costs["page_fault"] = {"error": str(error)}
        if config.syscalls:
            try:
                costs["syscall"] = measure_syscall_counting()
            except OSError as error:
                costs["syscall"] = {"error": str(error)}
    finally:
        os.sched_setaffinity(0, saved)

    existing = os.path.join(config.build_dir, "latency", "latency.csv")
    tool = os.path.join(config.build_dir, "bin", "chat-latency")
    latency = {}
    if os.path.exists(existing):
        latency = {"source": existing, "date": datetime.datetime.fromtimestamp(
            os.path.getmtime(existing), datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "note": "the latency target's last run on this machine"}
        try:
            latency["rows"] = read_latency_csv(existing)
        except (OSError, csv.Error) as error:
            latency["error"] = str(error)
    elif os.access(tool, os.X_OK):
        where = os.path.join(out_dir, "latency")
        quick = config.mode == "quick"
        argv = [tool, "--quiet", "--out", where] + (["--quick"] if quick
                                                     else [])
        progress.note(f"  measuring the machine: {os.path.basename(tool)}"
                      f"{' --quick' if quick else ''} (switches, fork, "
                      f"threads) on the server's CPU")
        latency = {"source": os.path.relpath(os.path.join(where,
                                                          "latency.csv"),
                                             out_dir),
                   "date": datetime.datetime.now(datetime.timezone.utc)
                   .isoformat(timespec="seconds"),
                   "note": "run by the sweep" + (" with --quick (fewer "
                                                 "samples)" if quick else "")}
        try:
            os.makedirs(where, exist_ok=True)
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=180, stdin=subprocess.DEVNULL,
                                  preexec_fn=_child_setup(pinning["server"]))
            if done.returncode != 0:
                latency["error"] = (f"exit status {done.returncode}: "
                                    f"{done.stderr.strip()[-300:]}")
            else:
                latency["rows"] = read_latency_csv(
                    os.path.join(where, "latency.csv"))
        except (OSError, subprocess.SubprocessError, csv.Error) as error:
            latency["error"] = str(error)
    else:
        latency = {"error": f"neither {existing} nor {tool}: build the "
                            f"latency tool (cmake --build BUILD --target "
                            f"latency)"}
    costs["latency_tool"] = latency
    return costs


# ---------------------------------------------------------------------------
# Progress on the terminal


class Progress:
    """One line per run. On a terminal it is rewritten in place with the
    current phase; elsewhere (CI logs) a line per phase and every 15 s."""

    def __init__(self, total, stream=sys.stderr):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.index = 0
        self.prefix = ""
        self.started = 0.0
        self.last_print = 0.0

    def start(self, model, clients, repeat, repeats):
        self.index += 1
        again = f" #{repeat + 1}" if repeats > 1 else ""
        self.prefix = (f"[{self.index:>{len(str(self.total))}}/{self.total}] "
                       f"{model:<9} N={clients:<6}{again:<3}")
        self.started = time.monotonic()
        self.phase("starting server", force=True)

    def phase(self, text, force=False):
        now = time.monotonic()
        line = f"{self.prefix} {text} ({now - self.started:.0f} s)"
        if self.tty:
            self.stream.write("\r\x1b[K" + line[:150])
            self.stream.flush()
        elif force or now - self.last_print >= 15:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = now

    def finish(self, text):
        line = f"{self.prefix} {text}"
        self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def note(self, text):
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------
# Processes


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup(cpus):
    """Runs in the child before exec: pin it, and make it die with us."""
    def setup():
        if cpus:
            os.sched_setaffinity(0, cpus)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return setup


def kill_group(process, grace):
    """SIGTERM to the process's whole group, SIGKILL after `grace` seconds
    (and always, for children that outlive their parent). Returns the exit
    status and the seconds it took to exit."""
    started = time.monotonic()
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        status = process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        status = None
    took = time.monotonic() - started
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if status is None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return status, took


def kill_groups(processes, grace):
    """kill_group for several processes at once: SIGTERM to every group,
    one deadline for all, then SIGKILL to every group. Returns their exit
    statuses and the seconds each took."""
    started = time.monotonic()
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    statuses, took = [], []
    for process in processes:
        left = max(0.0, started + grace - time.monotonic())
        try:
            statuses.append(process.wait(timeout=left))
        except subprocess.TimeoutExpired:
            statuses.append(None)
        took.append(time.monotonic() - started)
    for process, status in zip(processes, statuses):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if status is None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    return statuses, took


NOTABLE = ("error", "cannot", "fail", "refus", "full", "resource",
           "memory", "too many", "abort", "fatal", "killed", "dropped",
           "slow", "timeout", "lapped", "lost", "unavailable", "retired")


def condense_log(path, head=10, tail=30, notable_max=200):
    """Shortens a server log to its first and last lines and the lines that
    look like trouble (a log has a line per connection: 10,000 clients make
    megabytes). Returns the distinct notable lines, for the run's error."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    notable, seen = [], set()
    for line in lines[head:len(lines) - tail]:
        if any(word in line.lower() for word in NOTABLE):
            text = line.split(" ", 1)[-1]  # without the time stamp
            if text not in seen:
                seen.add(text)
                notable.append(line)
    if len(lines) > head + tail + len(notable):
        kept = (lines[:head] +
                [f"... ({len(lines) - head - tail} lines, "
                 f"{len(notable)} notable kept) ..."] +
                notable[:notable_max] + lines[-tail:])
        with open(path, "w") as f:
            f.write("\n".join(kept) + "\n")
    return [line for line in notable + lines[-tail:]
            if any(word in line.lower() for word in NOTABLE)]


class RunError(Exception):
    """A run that could not complete: the text is recorded verbatim."""


def _tail(path, lines=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def read_line(process, deadline, what):
    """One line from the process's stdout, before the deadline."""
    data = b""
    fd = process.stdout.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"no {what} within the deadline")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RunError(f"exited before {what} (status "
                               f"{process.wait()})")
            data += chunk
    return data.decode("utf-8", "replace").strip()


def server_argv(model, clients, config, port=0, redis_url=None):
    # Not -q: the server's log (one line per connection event, none per
    # message) is where it says why it refused a client or failed.
    argv = model.argv + ["-H", "127.0.0.1", "-p", str(port),
                         "--max-clients", str(clients + 64),
                         "--max-backlog", str(config.max_backlog),
                         "--login-timeout", "0"]
    if redis_url:
        argv += ["--reuse-port", "--redis", redis_url]
        if config.lease:
            argv += ["--lease", f"{config.lease:g}"]
    return argv


def start_server(model, clients, config, cpus, log_path, port=0,
                 redis_url=None):
    argv = server_argv(model, clients, config, port, redis_url)
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True,
                preexec_fn=_child_setup(cpus))
        except OSError as error:
            raise RunError(f"server: cannot start {argv[0]}: {error}")
    try:
        line = read_line(process, time.monotonic() + SERVER_START_TIMEOUT,
                         "startup line")
        words = line.split()
        if len(words) < 4 or words[-3:-1] != ["on", "port"]:
            raise RunError(f"unexpected startup line: {line!r}")
        return process, int(words[-1]), argv
    except RunError as error:
        kill_group(process, 1)
        raise RunError(f"server: {error}; stderr: {_tail(log_path)}")


class Fleet:
    """The servers of one run: one server, or a cluster (sweep --cluster K)
    of K servers of one model on one port (--reuse-port) sharing one room
    through a redis-server of the run's own. Sampled as one: CPU and memory
    are summed over every server's tree; Redis is sampled on its own."""

    def __init__(self):
        self.servers = []  # Popen, in start order
        self.logs = []
        self.redis = None  # cluster.Redis
        self.port = None
        self.argv = None

    @property
    def roots(self):
        return [p.pid for p in self.servers]

    def exited(self):
        """[(index, status)] of the servers that have exited."""
        return [(i, p.poll()) for i, p in enumerate(self.servers)
                if p.poll() is not None]

    def poll(self):
        gone = self.exited()
        return gone[0][1] if gone else None

    def cpu(self):
        return procstat.cpu_sample_many(self.roots)

    def memory(self):
        return procstat.memory_sample_many(self.roots)

    def redis_sample(self, memory=False):
        """Redis's CPU (its whole tree: the main thread and its background
        ones) and its commandstats; its memory too when asked."""
        if self.redis is None or self.redis.pid is None:
            return None
        sample = {"cpu": procstat.cpu_sample(self.redis.pid),
                  "commandstats": self.redis.commandstats()}
        if memory:
            taken = procstat.memory_sample(self.redis.pid)
            taken.pop("kernel", None)
            sample["memory"] = taken
        return sample


def start_fleet(model, clients, config, pinning, logs, tag):
    """One server (port 0), or for a cluster model a redis-server and K
    servers on one free port, each pinned like a server (--cluster-cpus all:
    free to run on every CPU). Returns the Fleet; raises RunError, having
    stopped what it started."""
    fleet = Fleet()
    if not model.cluster:
        process, port, argv = start_server(
            model, clients, config, pinning["server"],
            os.path.join(logs, f"{tag}-server.log"))
        fleet.servers, fleet.port, fleet.argv = [process], port, argv
        fleet.logs = [os.path.join(logs, f"{tag}-server.log")]
        return fleet
    cpus = None if config.cluster_cpus == "all" else pinning["server"]
    try:
        fleet.redis = cluster.Redis(config.redis_server,
                                    os.path.join(logs, f"{tag}-redis.log"),
                                    preexec_fn=_child_setup(cpus)).start()
        fleet.port = cluster.free_port()
        for i in range(model.cluster):
            log = os.path.join(logs, f"{tag}-server" +
                               (f"{i + 1}" if i else "") + ".log")
            process, port, argv = start_server(
                model, clients, config, cpus, log, fleet.port,
                fleet.redis.url)
            fleet.servers.append(process)
            fleet.logs.append(log)
            fleet.argv = argv
            if port != fleet.port:
                raise RunError(f"server {i + 1} said port {port}, not "
                               f"{fleet.port}")
        # A model that takes --redis but does not join the room through it
        # would serve a room of its own: its clients would miss lines.
        deadline = time.monotonic() + 5
        entered = 0
        while time.monotonic() < deadline:
            entered = fleet.redis.servers_in_room()
            if entered >= model.cluster:
                break
            time.sleep(0.05)
        if entered < model.cluster:
            raise RunError(f"only {entered} of {model.cluster} "
                           f"chat-{model.base} servers entered the room "
                           f"through Redis within 5 s (does chat-"
                           f"{model.base} support --redis yet?)")
        return fleet
    except (RunError, cluster.RedisError, OSError) as error:
        stop_fleet(fleet)
        if isinstance(error, RunError):
            raise
        raise RunError(f"cluster: {error}")


def stop_fleet(fleet, record=None):
    """SIGTERM to every server's group at once, SIGKILL to what is left
    after SERVER_STOP_TIMEOUT; then Redis. Records how each server ended."""
    exited = {i: status for i, status in fleet.exited()}
    if len(fleet.servers) == 1:
        status, took = kill_group(fleet.servers[0], SERVER_STOP_TIMEOUT)
        statuses, took = [status], [took]
    else:
        # All at once: stopped one by one, each stop would make its users
        # depart to the servers still running (N^2/4 deliveries at 10,000).
        statuses, took = kill_groups(fleet.servers, SERVER_STOP_TIMEOUT)
    ends = []
    for i in range(len(fleet.servers)):
        ends.append({"status": statuses[i], "seconds": round(took[i], 3),
                     "waited_s": SERVER_STOP_TIMEOUT,
                     "exited_during_run": i in exited})
    if fleet.redis is not None:
        fleet.redis.stop()
    if record is not None and ends:
        record["server_exit"] = ends[0]
        if len(ends) > 1:
            record["servers_exit"] = ends
    return ends


# ---------------------------------------------------------------------------
# One run: one model at one N


def latency_rate(clients, config):
    return max(1.0, min(config.latency_max_rate,
                        config.latency_deliveries / clients))


def connect_timeout(clients, config):
    return config.connect_base + config.connect_per_client * clients


def run_one(model, clients, repeat, config, pinning, out_dir, progress):
    """Runs one model at one N; returns the run's record, never raises for
    a failure of the server or the load (those are recorded)."""
    tag = f"{model.name}-{clients}-{repeat + 1}"
    logs = os.path.join(out_dir, "logs")
    record = {
        "model": model.name, "clients": clients, "repeat": repeat + 1,
        "server_source": model.source, "status": "failed", "error": None,
        "started": datetime.datetime.now(datetime.timezone.utc)
                   .isoformat(timespec="seconds"),
        "load_average_before": open("/proc/loadavg").read().split()[:3],
        "samples": {}, "load": None, "min_fanouts": config.min_fanouts,
    }
    if model.cluster:
        record["cluster"] = {"model": model.base, "servers": model.cluster,
                             "cpus": config.cluster_cpus}
    fleet = load = None
    counting = {"counter": None}  # the system-call counter, once attached
    progress.start(model.name, clients, repeat, config.repeats)
    try:
        fleet = start_fleet(model, clients, config, pinning, logs, tag)
        port = fleet.port
        record["server_argv"] = [os.path.basename(a) if i == 0 else a
                                 for i, a in enumerate(fleet.argv)]
        if fleet.redis is not None:
            record["cluster"]["redis_port"] = fleet.redis.port
        time.sleep(config.settle)
        record["samples"]["idle"] = {
            "memory": fleet.memory(), "cpu": fleet.cpu(),
            "cores": procstat.system_cpu_times(), "t": time.monotonic()}
        if fleet.redis is not None:
            record["samples"]["idle"]["redis"] = fleet.redis_sample(
                memory=True)
            record["samples"]["idle"]["sockets"] = [
                procstat.socket_count(pid) for pid in fleet.roots]

        rate = latency_rate(clients, config)
        timeout = connect_timeout(clients, config)
        load_argv = [config.chat_load, "--control", "-p", str(port),
                     "-n", str(clients), "-s", str(config.senders),
                     "--window", str(config.window), "-r", f"{rate:g}",
                     "-d", f"{config.duration:g}",
                     "--min-fanouts", str(config.min_fanouts),
                     "--max-duration", f"{config.max_window:g}",
                     "--warmup", f"{config.warmup:g}",
                     "--message-bytes", str(config.message_bytes),
                     "--connect-timeout", f"{timeout:g}",
                     "--drain-timeout", f"{config.drain:g}",
                     "--workload", config.workloads]
        record["load_argv"] = [os.path.basename(load_argv[0])] + load_argv[1:]
        load_log = os.path.join(logs, f"{tag}-load.log")
        with open(load_log, "wb") as log:
            load = subprocess.Popen(
                load_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True,
                preexec_fn=_child_setup(pinning["load"]))
        record["load"] = drive_load(load, fleet, config, timeout, record,
                                    progress, counting)
        if record["load"] is None:
            raise RunError(f"chat-load ended without a result (status "
                           f"{load.wait()}): {_tail(load_log)}")
        if not record["load"]["ok"]:
            errors = record["load"].get("errors") or []
            raise RunError("; ".join(
                f"{e['kind']} ({e['count']}x): {e['first']}" for e in errors)
                or "chat-load reported a failed check")
        record["status"] = "ok"
        stalled = report.window_verdict(record["load"].get("throughput"),
                                        config.min_fanouts)
        if stalled:
            # Not a failed check: a window with too little in it, reported
            # as stalled with what was seen, never as a rate.
            record["throughput_stalled"] = stalled
    except RunError as error:
        record["error"] = str(error)
    except (OSError, ValueError) as error:
        # Anything else that goes wrong in one run (a binary replaced while
        # the sweep runs, a full disk) is that run's error, not the sweep's.
        record["error"] = f"sweep: {type(error).__name__}: {error}"
    except KeyboardInterrupt:
        record["error"] = "interrupted (Ctrl-C)"
        record["status"] = "interrupted"
        raise
    finally:
        if counting["counter"] is not None:
            counting["counter"].close()
        if fleet is not None:
            progress.phase("stopping server" +
                           ("s and Redis" if fleet.redis else ""))
            gone = fleet.exited()
            stop_fleet(fleet, record)
            if gone:
                record["status"] = "failed"
                index, exited = gone[0]
                how = (f"killed by signal {-exited}" if exited < 0
                       else f"exit status {exited}")
                tail = _tail(fleet.logs[index])
                which = (f"server {index + 1} of {len(fleet.servers)}"
                         if len(fleet.servers) > 1 else "server")
                record["error"] = (
                    f"{which} exited during the run ({how})"
                    + (f", its last words: {tail}" if tail else "")
                    + (f"; then {record['error']}" if record["error"] else ""))
        if load is not None:
            try:
                load.stdin.close()
            except OSError:
                pass
            try:
                load.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            kill_group(load, 0)
        record["load_average_after"] = open("/proc/loadavg").read().split()[:3]
        said = []
        for path in (fleet.logs if fleet is not None else
                     [os.path.join(logs, f"{tag}-server.log")]):
            said += condense_log(path)
        if record["status"] != "ok" and said and record["error"]:
            record["error"] += "; the server's log: " + " | ".join(
                dict.fromkeys(said[:3]))
    progress.finish(report.one_line_summary(record))
    return record


def drive_load(load, fleet, config, connect_deadline_s, record, progress,
               counting):
    """Reads chat-load's control lines: shows its progress, samples the
    servers at each mark, answers "go". Returns chat-load's JSON result.
    Once the clients are connected and memory is read, it attaches the
    system-call counter (counting["counter"]) to the servers' trees. At
    each mark it also reads where the machine's CPUs went (/proc/stat,
    chat-load's and the sweep's own CPU) and, in a cluster, Redis."""
    fd = load.stdout.fileno()
    pending = b""
    phase = detail = "connect"
    deadline = time.monotonic() + connect_deadline_s + MARK_MARGIN
    per_phase = (config.warmup + max(config.duration, config.max_window) +
                 config.drain + MARK_MARGIN)
    while True:
        now = time.monotonic()
        if now > deadline:
            raise RunError(f"deadline: no progress from chat-load during "
                           f"{phase} (sweep watchdog)")
        if fleet.poll() is not None and phase != "done":
            # chat-load notices too and reports; give it a moment.
            deadline = min(deadline, now + 10)
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            progress.phase(detail)
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            if text.startswith("@progress "):
                detail = text[len("@progress "):]
                progress.phase(detail)
            elif text.startswith("@mark "):
                name = text[len("@mark "):].strip()
                sample = {"t": time.monotonic()}
                if name == "connected":
                    # Memory right after the registration storm, and again
                    # once the connections have been idle for a moment:
                    # the idle figure is the one a connection costs (a
                    # server may give back what the storm used; chat-evented
                    # does after a second of quiet).
                    progress.phase("measuring memory", force=True)
                    sample["memory_after_storm"] = fleet.memory()
                    time.sleep(IDLE_SETTLE_S)
                    sample["memory"] = fleet.memory()
                    if fleet.redis is not None:
                        sample["sockets"] = [procstat.socket_count(pid)
                                             for pid in fleet.roots]
                    if config.syscalls:
                        # After memory: the counters cost kernel memory.
                        progress.phase("attaching system-call counters",
                                       force=True)
                        counter = procstat.SyscallCounter().attach(
                            fleet.roots)
                        counting["counter"] = counter
                        record["syscall_counting"] = {
                            "method": counter.method, "error": counter.error,
                            "tasks": counter.tasks,
                            "counters": len(counter.fds),
                            "by_call": counter.method == "perf" and
                            len(counter.fds) > counter.tasks}
                sample["cpu"] = fleet.cpu()
                if len(fleet.servers) > 1:
                    sample["per_server_cpu_ns"] = [
                        procstat.cpu_sample(pid)["cpu_ns"]
                        for pid in fleet.roots]
                if counting["counter"] is not None:
                    sample["syscalls"] = counting["counter"].read(
                        fleet.roots)
                if fleet.redis is not None:
                    sample["redis"] = fleet.redis_sample(
                        memory=name == "connected")
                sample["cores"] = procstat.system_cpu_times()
                sample["load_cpu"] = procstat.cpu_sample(load.pid)
                sample["sweep_cpu"] = procstat.cpu_sample(os.getpid(),
                                                          tree=False)
                record["samples"][name] = sample
                load.stdin.write(b"go\n")
                load.stdin.flush()
                phase = {"connected": "throughput warm-up",
                         "throughput-start": "throughput",
                         "throughput-end": "throughput drain",
                         "latency-start": "latency",
                         "latency-end": "latency drain"}.get(name, name)
                detail = phase
                progress.phase(phase, force=True)
                deadline = time.monotonic() + per_phase
            elif text.startswith("@result "):
                return json.loads(text[len("@result "):])


# ---------------------------------------------------------------------------
# The sweep


def parse_arguments():
    parser = argparse.ArgumentParser(
        description="Run every chat server model over a range of client "
                    "counts and write bench/results/<date>-<host>/.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode",
                      const="quick", help="N = 10, 100, 1000, one repeat, "
                      "1 s windows: about two minutes (the default)")
    mode.add_argument("--full", action="store_const", dest="mode",
                      const="full", help="N = 10 ... 10,000, three repeats, "
                      "5 s windows: for reports")
    parser.add_argument("--models", help="comma list (default: every "
                        "chat-* in BUILD/bin and bench/peers/chat_*.py)")
    parser.add_argument("--server", action="append", default=[],
                        metavar="NAME=COMMAND",
                        help="also run this server (same command line as "
                             "the chat-* binaries), as model NAME")
    parser.add_argument("--clients", help="comma list of N (default: "
                        "10,100,1000 quick; 10,...,10000 full)")
    parser.add_argument("--repeats", type=int,
                        help="runs per model and N (default 1 quick, 3 full)")
    parser.add_argument("--duration", type=float,
                        help="seconds per measured window (default 1 quick, "
                             "5 full)")
    parser.add_argument("--max-window", type=float,
                        help="throughput: how long a window may go on to "
                             "hold enough to measure, seconds (default 5 "
                             "quick, 30 full); one that cannot is reported "
                             "as stalled")
    parser.add_argument("--min-fanouts", type=int, default=report.MIN_FANOUTS,
                        help="throughput: messages a window must hold "
                             "(default %(default)s)")
    parser.add_argument("--cluster", metavar="K[,K...]",
                        help="also run each C model as a cluster: K servers "
                             "on one port (--reuse-port) sharing one room "
                             "through a redis-server of each run's own "
                             "(model NAME-xK), beside the one server")
    parser.add_argument("--cluster-only", action="store_true",
                        help="with --cluster: only the clusters (to --append "
                             "them to a sweep of the same models)")
    parser.add_argument("--cluster-cpus", choices=("server", "all"),
                        default="server",
                        help="where a cluster's servers and Redis run: "
                             "'server' (default), all on the one server's "
                             "CPU, the same budget as one server; 'all', on "
                             "every CPU, shared with chat-load")
    parser.add_argument("--lease", type=float, default=None,
                        help="a cluster's servers' --lease, seconds "
                             "(default: theirs, 5)")
    parser.add_argument("--redis-server", default=None,
                        help="the redis-server binary for --cluster "
                             "(default: redis-server on PATH)")
    parser.add_argument("--no-syscalls", dest="syscalls",
                        action="store_false",
                        help="do not count system calls (perf counters cost a "
                             "little on every system call while attached)")
    parser.add_argument("--no-calibrate", dest="calibrate",
                        action="store_false",
                        help="do not measure the machine's switch, page-fault "
                             "and system-call costs")
    parser.add_argument("--warmup", type=float,
                        help="seconds of load before each window (default "
                             "0.3 quick, 1 full)")
    parser.add_argument("--drain", type=float,
                        help="deadline for the last deliveries, seconds")
    parser.add_argument("--senders", type=int, default=10,
                        help="clients that send, in both workloads "
                             "(default %(default)s)")
    parser.add_argument("--window", type=int, default=8,
                        help="throughput: own messages in flight per sender")
    parser.add_argument("--message-bytes", type=int, default=32,
                        help="length of a message line's text (default "
                             "%(default)s)")
    parser.add_argument("--latency-deliveries", type=float, default=20000,
                        help="latency load: deliveries per second in total, "
                             "so R = this / N messages per second")
    parser.add_argument("--latency-max-rate", type=float, default=2000,
                        help="latency load: at most this many messages per "
                             "second (default %(default)s, which small N "
                             "reach)")
    parser.add_argument("--connect-per-client", type=float, default=None,
                        help="connect deadline: base + this * N seconds")
    parser.add_argument("--max-backlog", type=int, default=64 << 20,
                        help="the servers' --max-backlog, bytes")
    parser.add_argument("--workloads", default="throughput,latency",
                        help="chat-load's workloads after connecting "
                             "(default %(default)s)")
    parser.add_argument("--build-dir", default=os.path.join(REPO_DIR, "build"),
                        help="CMake build tree with bin/chat-* and "
                             "bin/chat-load (default: build/)")
    parser.add_argument("--out", help="results folder (default "
                        "bench/results/<date>-<host>)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server and chat-load to CPUs")
    parser.add_argument("--keep-going", action="store_true",
                        help="run larger N after a model failed every "
                             "repeat at some N (default: skip them)")
    parser.add_argument("--require", action="append", default=[],
                        metavar="MODEL",
                        help="exit 1 unless MODEL exists and every run of it "
                             "passed (CI's smoke test uses chat-evented)")
    parser.add_argument("--append", action="store_true",
                        help="add to the --out folder's earlier results "
                             "(runs of the models at the N run now are replaced)")
    parser.add_argument("--no-report", action="store_true",
                        help="write runs.json only (report.py FOLDER writes "
                             "the rest later)")
    config = parser.parse_args()
    config.mode = config.mode or "quick"
    defaults = MODES[config.mode]
    config.clients = ([int(n.replace("_", "")) for n in config.clients.split(",")]
                      if config.clients else defaults["clients"])
    for key in ("repeats", "duration", "warmup", "drain", "max_window"):
        if getattr(config, key) is None:
            setattr(config, key, defaults[key])
    config.connect_base = defaults["connect_base"]
    if config.connect_per_client is None:
        # Full mode: 1,620 s at 10,000, what chat-forking needs to
        # register 10,000 on one CPU (about 15 minutes here).
        config.connect_per_client = 0.03 if config.mode == "quick" else 0.15
    try:
        config.cluster = sorted({int(k) for k in config.cluster.split(",")}) \
            if config.cluster else []
    except ValueError:
        parser.error(f"--cluster wants K or K,K...: {config.cluster!r}")
    if any(k < 1 or k > 16 for k in config.cluster):
        parser.error("--cluster: 1 to 16 servers")
    if config.cluster_only and not config.cluster:
        parser.error("--cluster-only needs --cluster K")
    config.settle = 0.3
    config.build_dir = os.path.abspath(config.build_dir)
    config.chat_load = os.path.join(config.build_dir, "bin", "chat-load")
    return config


def choose_pinning(disabled):
    cpus = sorted(os.sched_getaffinity(0))
    if disabled or len(cpus) < 2:
        why = "disabled (--no-pin)" if disabled else "only one CPU"
        return {"server": None, "load": None, "note": f"not pinned: {why}"}
    return {"server": {cpus[-1]}, "load": {cpus[0]},
            "note": f"server on CPU {cpus[-1]}, chat-load and the sweep on "
                    f"CPU {cpus[0]}"}


def extend_results(out_dir, new, models, progress):
    """--append: keeps the folder's earlier runs (and its machine record)
    except those of the models and N run now, which the new runs replace.
    For a model that appeared after the sweep, one to run again, or the
    rest of an interrupted sweep (which then no longer counts as
    interrupted: the appended runs say what was added, and when)."""
    path = os.path.join(out_dir, "runs.json")
    if not os.path.exists(path):
        return new
    with open(path) as f:
        old = json.load(f)
    names = {m.name for m in models}
    replaced = {(name, n) for name in names
                for n in new["config"]["clients"]}
    old["runs"] = [r for r in old["runs"]
                   if (r["model"], r["clients"]) not in replaced]
    order = {name: i for i, name in enumerate(MODEL_ORDER)}
    old["models"] = sorted(
        [m for m in old["models"] if m["name"] not in names] + new["models"],
        key=lambda m: (order.get(m["name"], len(order)), m["name"]))
    old["config"]["clients"] = sorted(set(old["config"]["clients"]) |
                                      set(new["config"]["clients"]))
    old["config"].setdefault("latency_rates", {}).update(
        new["config"]["latency_rates"])
    old.setdefault("appended", []).append({
        "models": sorted(names), "date": new["machine"]["date"],
        "load_average": new["machine"]["load_average"],
        "repeats": new["config"]["repeats"],
        "clients": new["config"]["clients"],
        "continued_interrupted_sweep": old.get("interrupted", False)})
    old["interrupted"] = False
    for key in ("costs", "syscall_counting"):
        if key in new["machine"]:
            # The newest measurement of the machine; the earlier one is kept
            # with the appended runs' record.
            if key in old["machine"]:
                old["appended"][-1]["earlier_" + key] = old["machine"][key]
            old["machine"][key] = new["machine"][key]
    old["limit_notes"] = sorted(set(old.get("limit_notes", []) +
                                    new["limit_notes"]))
    progress.note(f"  appending to {os.path.relpath(path)}: keeping "
                  f"{len(old['runs'])} runs of other models or N")
    return old


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    # Ctrl-C, SIGTERM and SIGHUP all stop the sweep the same way: the run in
    # progress is killed (its whole process groups) and what was measured so
    # far is written. Also when started with SIGINT ignored (a background
    # job of a script).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    config = parse_arguments()
    if not os.access(config.chat_load, os.X_OK):
        sys.exit(f"sweep: {config.chat_load} not found: build first "
                 f"(cmake -S . -B build && cmake --build build)")
    models, missing = find_models(
        config.build_dir, config.models.split(",") if config.models else None,
        config.server)
    for name in missing:
        print(f"sweep: no model '{name}' (looked for chat-{name} in "
              f"{config.build_dir}/bin and bench/peers/chat_{name}.py)",
              file=sys.stderr)
    required_missing = [r for r in config.require
                        if r.removeprefix("chat-") not in
                        {m.name for m in models}]
    if not models:
        sys.exit("sweep: no server model to run")
    # Each group runs side by side at each N and repeat: a model, then its
    # clusters, so that both meet the same machine (and its other work).
    groups = []
    for model in models:
        variants = cluster_models(model, config.cluster)
        if config.cluster and not variants:
            print(f"sweep: {model.name} is not a C server of the build "
                  f"tree: no cluster of it", file=sys.stderr)
        group = ([] if config.cluster_only else [model]) + variants
        if group:
            groups.append(group)
    models = [m for group in groups for m in group]
    if not models:
        sys.exit("sweep: no server model to run")
    if config.cluster:
        config.redis_server = (config.redis_server or
                               cluster.find_redis_server())
        if not config.redis_server or not os.access(config.redis_server,
                                                    os.X_OK):
            sys.exit("sweep: --cluster needs redis-server (apt-get install "
                     "redis-server; or --redis-server PATH)")

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out_dir = config.out or os.path.join(
        BENCH_DIR, "results", f"{stamp}-{socket.gethostname()}")
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)

    usable_cpus = sorted(os.sched_getaffinity(0))
    pinning = choose_pinning(config.no_pin)
    if pinning["load"]:
        os.sched_setaffinity(0, pinning["load"])  # the sweep's own sampling
    limit_notes = raise_limits(max(config.clients))
    machine = describe_machine(config.build_dir, pinning["note"],
                               usable_cpus)
    why_not = procstat.perf_unavailable() if config.syscalls else None
    machine["syscall_counting"] = (
        "off (--no-syscalls)" if not config.syscalls else
        f"/proc/PID/io's read- and write-class calls only: perf cannot "
        f"count here ({why_not})" if why_not else "perf")

    total = len(models) * len(config.clients) * config.repeats
    progress = Progress(total)
    progress.note(f"sweep ({config.mode}): {', '.join(m.name for m in models)}"
                  f" x N={','.join(map(str, config.clients))} x "
                  f"{config.repeats} -> {os.path.relpath(out_dir)}")
    progress.note(f"  {pinning['note']}; load average "
                  f"{' '.join(machine['load_average'])}")
    if config.cluster:
        machine["cluster_placement"] = (
            "a cluster's servers and its redis-server run on every CPU, "
            "shared with chat-load" if config.cluster_cpus == "all" or
            not pinning["server"] else
            "a cluster's servers and its redis-server share the one "
            "server's CPU" + (f" (CPU {min(pinning['server'])})"))
        machine["redis"] = _first_line([config.redis_server, "--version"])
        progress.note(f"  clusters: {machine['cluster_placement']}; "
                      f"{machine['redis']}")
    for note in limit_notes:
        progress.note("  limits: " + note)
    if config.calibrate:
        machine["costs"] = machine_costs(config, pinning, out_dir, progress)

    results = {
        "machine": machine, "limit_notes": limit_notes,
        "config": {k: v for k, v in vars(config).items()
                   if isinstance(v, (int, float, str, list, bool))
                   and k not in ("build_dir", "chat_load", "out")},
        "models": [dict({"name": m.name, "source": m.source,
                         "heap_policy": heap_policy(m)},
                        **({"cluster": {"model": m.base,
                                        "servers": m.cluster}}
                           if m.cluster else {})) for m in models],
        "runs": [], "interrupted": False,
    }
    results["config"]["latency_rates"] = {
        str(n): latency_rate(n, config) for n in config.clients}
    if config.append:
        results = extend_results(out_dir, results, models, progress)

    def save():
        with open(os.path.join(out_dir, "runs.json"), "w") as f:
            json.dump(results, f, indent=1)

    started = time.monotonic()
    try:
        for group in groups:
            failed_at = {m.name: None for m in group}
            for clients in config.clients:
                outcomes = {m.name: [] for m in group}
                last_error = {m.name: "" for m in group}
                for repeat in range(config.repeats):
                    for model in group:
                        if failed_at[model.name] is not None and \
                                not config.keep_going:
                            progress.index += 1
                            results["runs"].append({
                                "model": model.name, "clients": clients,
                                "repeat": repeat + 1, "status": "skipped",
                                "error": f"skipped: every run failed at "
                                         f"N={failed_at[model.name]}"})
                            if repeat == 0:
                                progress.note(
                                    f"{'':>{2 * len(str(total)) + 3}} "
                                    f"{model.name:<9} N={clients:<6} skipped "
                                    f"(failed at N={failed_at[model.name]})")
                            continue
                        if outcomes[model.name] and \
                                "deadline" in last_error[model.name]:
                            # Another run would take as long and fail the
                            # same way.
                            progress.index += 1
                            results["runs"].append({
                                "model": model.name, "clients": clients,
                                "repeat": repeat + 1, "status": "skipped",
                                "error": "skipped: the run before hit a "
                                         "deadline"})
                            continue
                        run = run_one(model, clients, repeat, config, pinning,
                                      out_dir, progress)
                        results["runs"].append(run)
                        outcomes[model.name].append(run["status"])
                        last_error[model.name] = run.get("error") or ""
                        save()
                for model in group:
                    if outcomes[model.name] and \
                            all(s != "ok" for s in outcomes[model.name]):
                        failed_at[model.name] = clients
    except KeyboardInterrupt:
        results["interrupted"] = True
        progress.note("sweep: interrupted; writing what was measured")
    results["machine"]["load_average_end"] = \
        open("/proc/loadavg").read().split()[:3]
    results["seconds"] = round(time.monotonic() - started, 1)
    save()

    if not config.no_report:
        written = report.build(out_dir)
        progress.note(f"sweep: done in {results['seconds']:.0f} s; report: "
                      f"{os.path.relpath(written)}")

    status = 0
    for name in required_missing:
        progress.note(f"sweep: FAILED: required model {name} was not found")
        status = 1
    for name in config.require:
        name = name.removeprefix("chat-")
        bad = [r for r in results["runs"]
               if r["model"] == name and r["status"] != "ok"]
        for r in bad:
            progress.note(f"sweep: FAILED: {name} N={r['clients']} "
                          f"#{r['repeat']}: {r['error']}")
            status = 1
    if results["interrupted"]:
        status = 130
    return status


if __name__ == "__main__":
    sys.exit(main())
