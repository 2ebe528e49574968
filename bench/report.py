#!/usr/bin/env python3
"""The report of a sweep: figures, CSV, charts and report.md.

    python3 bench/report.py bench/results/<folder>

reads <folder>/runs.json (written by sweep.py: raw /proc samples and
chat-load's results for every run) and writes, in the same folder:

  runs.csv      one row per run, with the derived figures below
  summary.csv   the median of each figure per model and N, over the runs
                that passed every check (a failed run is never averaged in)
  charts/       one gnuplot script, data file, SVG and PNG per figure:
                log-scale N on the x axis, one line per model (SEDA style)
  report.md     the talk's C10K table with the figures measured at the
                largest N, where each model broke and why, the targets, the
                charts and every figure per N

The derived figures, per run (see bench/README.md for the method):

  user_bytes_per_conn    (PSS with N idle clients - PSS idle) / N
  kernel_bytes_per_conn  (KernelStack + PageTables + Slab, same delta) / N
  cpu_us_per_delivery    server CPU in the throughput window / deliveries
  syscalls_per_delivery  server system calls in that window / deliveries
  switches_per_delivery  server context switches in that window / deliveries
  deliveries_per_s       message lines received by all clients per second
  open_loop_*            the same per-delivery costs in the latency window
                         (open loop: a fixed schedule of R messages/s)
  latency_*_us           open-loop delivery latency at R messages per second
  connect_seconds        time to connect and register all N clients

A throughput window with too little in it gives no rate and no cost per
delivery: window_verdict() calls it stalled (throughput_stalled in runs.csv,
"stalled" in the report), with what was seen in it.
"""

import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
import procstat  # noqa: E402

# The talk's C10K table: which row each model is, and who uses it. On the
# slide one cell, "Apache, Tomcat (Gunicorn) ...", spans Process and Thread.
# A model not listed here gets a row of its own name.
C10K_ROWS = {
    "forking": ("Process", "one process per connection",
                "Apache, Tomcat (Gunicorn) ..."),
    "threaded": ("Thread", "one thread per connection",
                 "Apache, Tomcat (Gunicorn) ... (one cell with Process)"),
    "evented": ("Async Programming", "one event loop (libevent, epoll)",
                "Nginx (Tornado) ..."),
    "coroutine": ("Async Programming, with coroutines",
                  "a coroutine per connection on one event loop",
                  "the talk's coroutines (PEP 342), in C"),
    "asyncio": ("Async Programming, in Python", "the talk's asyncio server",
                "Tornado, the talk's ChatServer"),
}
# Colour, gnuplot point type and dash type (dt) per model: no two lines look
# alike even in black and white (7 circle, 5 square, 9 triangle, 11
# triangle down, 13 diamond; odd = filled).
STYLES = {"evented": ("#1f77b4", 7, "1"), "coroutine": ("#9467bd", 13, "(14,5)"),
          "threaded": ("#ff7f0e", 5, "2"), "forking": ("#d62728", 9, "4"),
          "asyncio": ("#2ca02c", 11, "5")}
EXTRA_STYLES = [("#8c564b", 4, "(6,6)"), ("#e377c2", 6, "(20,6,4,6)"),
                ("#7f7f7f", 8, "(2,4)"), ("#17becf", 10, "(10,3,3,3,3,3)")]

# A throughput window must hold at least this many messages sent inside it
# (each is one fan-out to N clients), and its drain must not be longer than
# it, or it is stalled (window_verdict). chat-load extends a short window
# to reach this (sweep --min-fanouts, --max-window).
MIN_FANOUTS = 20

# Each chart: (file name, figure, title, y label, scale, y tick format).
# The value drawn is figure * scale. Times are drawn in the unit a reader
# reads (ms, s) with plain numbers; counts keep gnuplot's SI suffixes (%c:
# k = thousand, M = million), which the y label spells out.
SI = "%.0s%c"
CHARTS = [
    ("memory-user", "user_bytes_per_conn",
     "User-space memory per idle connection (PSS, whole process tree)",
     "KiB per connection", 1 / 1024, "%g"),
    ("memory-kernel", "kernel_bytes_per_conn",
     "Kernel memory per idle connection (stacks + page tables + Slab)",
     "KiB per connection", 1 / 1024, "%g"),
    ("cpu-per-delivery", "cpu_us_per_delivery",
     "Server CPU per delivery (throughput workload, closed loop)",
     "µs of CPU per delivery", 1, "%g"),
    ("cpu-per-delivery-open-loop", "open_loop_cpu_us_per_delivery",
     "Server CPU per delivery (latency workload, open loop)",
     "µs of CPU per delivery", 1, "%g"),
    ("syscalls-per-delivery", "syscalls_per_delivery",
     "Server system calls per delivery (throughput workload, closed loop)",
     "system calls per delivery", 1, "%g"),
    ("syscalls-per-delivery-open-loop", "open_loop_syscalls_per_delivery",
     "Server system calls per delivery (latency workload, open loop)",
     "system calls per delivery", 1, "%g"),
    ("switches-per-delivery", "switches_per_delivery",
     "Server context switches per delivery (throughput workload, closed loop)",
     "context switches per delivery", 1, "%g"),
    ("switches-per-delivery-open-loop", "open_loop_switches_per_delivery",
     "Server context switches per delivery (latency workload, open loop)",
     "context switches per delivery", 1, "%g"),
    ("deliveries", "deliveries_per_s",
     "Deliveries per second (throughput workload)",
     "deliveries per second (k = thousand, M = million)", 1, SI),
    ("latency-p99", "latency_p99_us",
     "p99 delivery latency at a fixed open-loop rate",
     "milliseconds", 1e-3, "%g"),
    ("connect", "connect_seconds",
     "Time to connect and register all N clients", "seconds", 1, "%g"),
    ("tasks", "tasks", "Server tasks (processes and threads) with N clients",
     "tasks (k = thousand)", 1, SI),
]
MEMORY_FIGURES = ("user_bytes_per_conn", "kernel_bytes_per_conn")

CSV_FIGURES = [
    "user_bytes_per_conn", "rss_bytes_per_conn", "kernel_bytes_per_conn",
    "kernel_stack_per_conn", "page_tables_per_conn", "slab_per_conn",
    "system_kernel_stack_per_conn", "system_page_tables_per_conn",
    "tcp_sockets_added", "tcp_memory_added", "tasks", "processes", "server_pss_bytes",
    "connect_seconds", "connect_rate_per_s", "connect_p50_us",
    "connect_p99_us", "connect_max_us", "connect_server_cpu_s",
    "throughput_stalled", "window_seconds", "window_extended",
    "window_messages", "window_deliveries", "drain_seconds",
    "deliveries_per_s", "messages_per_s", "cpu_us_per_delivery",
    "cpu_user_us_per_delivery", "cpu_system_us_per_delivery",
    "syscalls_per_delivery", "switches_per_delivery",
    "voluntary_switches_per_delivery", "faults_per_delivery",
    "server_cpu_share", "server_wait_share", "loadgen_cpu_share",
    "loadgen_wait_share",
    "open_loop_behind", "open_loop_cpu_us_per_delivery",
    "open_loop_syscalls_per_delivery", "open_loop_switches_per_delivery",
    "open_loop_faults_per_delivery",
    "latency_rate_per_s", "latency_p50_us", "latency_p90_us",
    "latency_p99_us", "latency_p999_us", "latency_max_us",
    "latency_send_lag_p99_us", "latency_server_cpu_share",
    "latency_server_wait_share",
    "latency_loadgen_cpu_share", "syscall_method", "missing", "duplicated",
    "out_of_order", "unexpected_lines", "disconnected", "arrival_errors",
    "undelivered_at_deadline",
    # Where the machine's CPUs went in the throughput window, in cores (see
    # cores_figures); every run.
    "cores_busy", "cores_servers", "cores_redis", "cores_loadgen",
    "cores_sweep", "cores_other", "cores_idle",
    # Clusters (sweep --cluster K): Redis beside the servers (see
    # cluster_figures); for one server the total is its own CPU.
    "servers", "clients_per_server", "clients_max_over_mean",
    "total_cpu_us_per_delivery", "redis_cpu_us_per_delivery",
    "redis_cpu_us_per_line", "redis_cpu_share", "redis_usec_per_line",
    "evalsha_per_line", "xread_per_line", "redis_round_trips_per_line",
    "open_loop_total_cpu_us_per_delivery", "open_loop_redis_cpu_us_per_line",
    "open_loop_evalsha_per_line", "open_loop_xread_per_line",
    "open_loop_redis_round_trips_per_line",
    "connect_evalsha_per_arrival", "connect_xread_per_arrival",
    "redis_bytes_per_conn",
]
# Figures that are text, not numbers: the median is not taken, the first
# passed run's is shown.
TEXT_FIGURES = ("clients_per_server",)


# ---------------------------------------------------------------------------
# Figures


def window_verdict(window, min_fanouts=MIN_FANOUTS):
    """Why a throughput window is no measurement, or None when it is one.

    window is chat-load's throughput result. A window is stalled when fewer
    than min_fanouts messages were sent inside it (a closed-loop sender
    whose echo waits behind a fan-out sends nothing: the deliveries counted
    are of messages sent before the window, and their number says nothing
    about a rate), or when the drain after it took longer than the window
    itself (the window saw less than one turn of the messages in flight).
    chat-load extends a short window to avoid both (up to --max-duration);
    one that still falls short is reported as stalled, with what was seen."""
    if not window or "seconds" not in window:
        return None
    seconds = window["seconds"]
    sent = window.get("messages", 0)
    drain = window.get("drain_s", 0.0)
    why = []
    if sent < min_fanouts:
        why.append(f"only {sent:,} message(s) sent in it (at least "
                   f"{min_fanouts} needed)")
    if drain > seconds:
        why.append(f"its drain ({drain:.3g} s) took longer than the window")
    if not why:
        return None
    return (f"stalled: {', and '.join(why)}; seen: {sent:,} messages sent and "
            f"{window.get('deliveries', 0):,} deliveries in a "
            f"{seconds:.3g} s window"
            + (" (extended as far as allowed)" if window.get("extended")
               else "") + f", then a {drain:.3g} s drain")


def open_loop_verdict(window):
    """Why the latency window's per-delivery costs mean nothing, or None:
    a server that ended the window more than a window behind its fixed
    schedule (the drain after it longer than the window) spent the window
    catching up; its latency figures still count every delay."""
    if not window or "seconds" not in window:
        return None
    if window.get("drain_s", 0.0) > window["seconds"]:
        return (f"behind: the drain ({window['drain_s']:.3g} s) took longer "
                f"than the {window['seconds']:.3g} s window; "
                f"{window.get('deliveries', 0):,} deliveries in it")
    return None


def _per_delivery(figures, prefix, cpu, calls, deliveries):
    """CPU, system calls, switches and page faults per delivery."""
    switches = cpu["voluntary_switches"] + cpu["involuntary_switches"]
    figures[prefix + "cpu_us_per_delivery"] = cpu["cpu_s"] * 1e6 / deliveries
    figures[prefix + "switches_per_delivery"] = switches / deliveries
    if "minor_faults" in cpu:
        figures[prefix + "faults_per_delivery"] = \
            (cpu["minor_faults"] + cpu["major_faults"]) / deliveries
    if calls:
        figures[prefix + "syscalls_per_delivery"] = \
            calls["syscalls"] / deliveries
        if calls["by_call"]:
            by_call = {name: count / deliveries
                       for name, count in calls["by_call"].items() if count}
            by_call["other"] = max(0.0, figures[prefix +
                                                "syscalls_per_delivery"] -
                                   sum(by_call.values()))
            figures[prefix + "syscalls_by_call"] = by_call
        figures["syscall_method"] = calls["method"]


def cores_figures(start, end):
    """Where the machine's CPUs went between two samples, in cores (1.0 =
    one CPU for the whole window): the servers (all their trees), Redis,
    chat-load, the sweep itself, and the rest of the busy time ("other":
    other processes on the machine, and kernel work charged to no task);
    idle; and each CPU's busy share. None without /proc/stat samples."""
    if not start or not end or "cores" not in start or "cores" not in end:
        return None
    seconds = end["t"] - start["t"]
    if seconds <= 0:
        return None
    busy, irq = {}, 0.0
    for cpu, then in start["cores"]["cpus"].items():
        now = end["cores"]["cpus"].get(cpu)
        if now is None:
            continue
        b = now["busy"] - then["busy"]
        total = b + now["idle"] - then["idle"]
        if total > 0:
            busy[cpu] = b / total
            irq += (now.get("softirq", 0) - then.get("softirq", 0)) / total

    def cores(key):
        a, b = start.get(key), end.get(key)
        if not a or not b:
            return 0.0
        return procstat.cpu_delta(a, b)["cpu_s"] / seconds

    out = {"by_cpu": busy, "busy": sum(busy.values()),
           "servers": cores("cpu"), "loadgen": cores("load_cpu"),
           "sweep": cores("sweep_cpu"), "irq": irq,
           "redis": (procstat.cpu_delta(start["redis"]["cpu"],
                                        end["redis"]["cpu"])["cpu_s"] /
                     seconds if start.get("redis") and end.get("redis")
                     else 0.0)}
    out["other"] = max(0.0, out["busy"] - out["servers"] - out["redis"] -
                       out["loadgen"] - out["sweep"])
    out["idle"] = max(0.0, len(busy) - out["busy"])
    return out


def _redis_window(start, end):
    """Redis's CPU seconds and its commands between two samples."""
    a, b = (start or {}).get("redis"), (end or {}).get("redis")
    if not a or not b:
        return None, None
    return (procstat.cpu_delta(a["cpu"], b["cpu"])["cpu_s"],
            cluster.round_trips(a.get("commandstats"),
                                b.get("commandstats")))


def cluster_figures(run, figures):
    """A cluster's figures (sweep --cluster K), beside the usual ones:
    how the kernel spread the clients over the servers; Redis's CPU per
    delivery and per room line (a message said once, delivered to all N),
    and the server's commands to Redis per room line, in the throughput
    window (closed loop), the latency window (open loop) and, per arrival,
    the connect phase; total_cpu_us_per_delivery = servers + Redis (for one
    server, its own CPU)."""
    n = run["clients"]
    samples = run.get("samples") or {}
    load = run.get("load") or {}
    info = run.get("cluster")
    figures["servers"] = info["servers"] if info else 1
    for prefix in ("", "open_loop_"):
        if prefix + "cpu_us_per_delivery" in figures:
            figures[prefix + "total_cpu_us_per_delivery"] = \
                figures[prefix + "cpu_us_per_delivery"]
    if not info:
        return
    idle, connected = samples.get("idle"), samples.get("connected")
    if idle and connected and idle.get("sockets") and \
            connected.get("sockets"):
        spread = [b - a for a, b in zip(idle["sockets"],
                                        connected["sockets"])]
        figures["clients_per_server"] = "/".join(f"{c:,}" for c in spread)
        if sum(spread) > 0:
            figures["clients_max_over_mean"] = \
                max(spread) / (sum(spread) / len(spread))
    if idle and connected and (idle.get("redis") or {}).get("memory") and \
            (connected.get("redis") or {}).get("memory"):
        figures["redis_bytes_per_conn"] = (
            connected["redis"]["memory"]["pss"] -
            idle["redis"]["memory"]["pss"]) / n
    cpu, calls = _redis_window(idle, connected)
    if calls and n:
        figures["connect_evalsha_per_arrival"] = calls["evalsha"] / n
        figures["connect_xread_per_arrival"] = calls["xread"] / n
    for prefix, window, first, last in (
            ("", load.get("throughput"), "throughput-start",
             "throughput-end"),
            ("open_loop_", load.get("latency"), "latency-start",
             "latency-end")):
        if prefix + "cpu_us_per_delivery" not in figures or not window:
            continue  # stalled, behind or missing: no rate
        deliveries = window.get("deliveries", 0)
        cpu, calls = _redis_window(samples.get(first), samples.get(last))
        if cpu is None or deliveries <= 0:
            continue
        lines = deliveries / n  # room lines delivered to everyone
        figures[prefix + "total_cpu_us_per_delivery"] = \
            figures[prefix + "cpu_us_per_delivery"] + cpu * 1e6 / deliveries
        figures[prefix + "redis_cpu_us_per_line"] = cpu * 1e6 / lines
        if calls:
            figures[prefix + "evalsha_per_line"] = calls["evalsha"] / lines
            figures[prefix + "xread_per_line"] = calls["xread"] / lines
            figures[prefix + "redis_round_trips_per_line"] = \
                calls["round_trips"] / lines
        if not prefix:
            figures["redis_cpu_us_per_delivery"] = cpu * 1e6 / deliveries
            figures["redis_cpu_share"] = cpu / window["seconds"]
            if calls:
                figures["redis_usec_per_line"] = calls["usec"] / lines


def derive(run, stack_bytes=16384, min_fanouts=MIN_FANOUTS):
    """The figures of one run, from its raw samples and chat-load's result.
    Missing pieces (a run that failed early) give missing figures.
    stack_bytes is the kernel stack of one task on the machine measured."""
    figures = {}
    n = run["clients"]
    min_fanouts = run.get("min_fanouts", min_fanouts)  # the sweep's setting
    samples = run.get("samples") or {}
    load = run.get("load") or {}
    idle, connected = samples.get("idle"), samples.get("connected")

    if idle and connected and "memory" in connected:
        before, after = idle["memory"], connected["memory"]
        k0, k1 = before["kernel"], after["kernel"]
        figures["user_bytes_per_conn"] = (after["pss"] - before["pss"]) / n
        figures["rss_bytes_per_conn"] = (after["rss"] - before["rss"]) / n
        # The server's own: its tasks' kernel stacks and its page tables.
        figures["kernel_stack_per_conn"] = \
            (after["tasks"] - before["tasks"]) * stack_bytes / n
        if "page_tables" in after:
            figures["page_tables_per_conn"] = \
                (after["page_tables"] - before["page_tables"]) / n
        else:  # runs.json from before VmPTE was sampled
            figures["page_tables_per_conn"] = \
                (k1["PageTables"] - k0["PageTables"]) / n
        # System-wide: sockets (both ends) and everything else meanwhile.
        figures["slab_per_conn"] = (k1["Slab"] - k0["Slab"]) / n
        figures["system_kernel_stack_per_conn"] = \
            (k1["KernelStack"] - k0["KernelStack"]) / n
        figures["system_page_tables_per_conn"] = \
            (k1["PageTables"] - k0["PageTables"]) / n
        figures["tcp_memory_added"] = \
            k1.get("tcp_mem_bytes", 0) - k0.get("tcp_mem_bytes", 0)
        figures["kernel_bytes_per_conn"] = (
            figures["kernel_stack_per_conn"] +
            figures["page_tables_per_conn"] + figures["slab_per_conn"])
        figures["tcp_sockets_added"] = k1["tcp_inuse"] - k0["tcp_inuse"]
        figures["tasks"] = after["tasks"]
        figures["processes"] = after["processes"]
        figures["server_pss_bytes"] = after["pss"]
        figures["connect_server_cpu_s"] = procstat.cpu_delta(
            idle["cpu"], connected["cpu"])["cpu_s"]

    connect = load.get("connect") or {}
    if connect.get("completed"):
        figures["connect_seconds"] = connect["seconds"]
        figures["connect_rate_per_s"] = connect["rate_per_s"]
        figures["connect_p50_us"] = connect["latency_us"]["p50"]
        figures["connect_p99_us"] = connect["latency_us"]["p99"]
        figures["connect_max_us"] = connect["latency_us"]["max"]

    throughput = load.get("throughput")
    start, end = samples.get("throughput-start"), samples.get("throughput-end")
    if throughput and start and end:
        figures["window_seconds"] = throughput["seconds"]
        figures["window_extended"] = int(bool(throughput.get("extended")))
        figures["window_messages"] = throughput["messages"]
        figures["window_deliveries"] = throughput["deliveries"]
        figures["drain_seconds"] = throughput.get("drain_s")
        stalled = window_verdict(throughput, min_fanouts)
        if stalled:
            figures["throughput_stalled"] = stalled
    if throughput and start and end and throughput["deliveries"] > 0 and \
            "throughput_stalled" not in figures:
        cpu = procstat.cpu_delta(start["cpu"], end["cpu"])
        deliveries = throughput["deliveries"]
        figures["deliveries_per_s"] = throughput["deliveries_per_s"]
        figures["messages_per_s"] = throughput["messages_per_s"]
        _per_delivery(figures, "", cpu, procstat.syscall_delta(
            start.get("syscalls"), end.get("syscalls")), deliveries)
        figures["cpu_user_us_per_delivery"] = \
            cpu["cpu_user_s"] * 1e6 / deliveries
        figures["cpu_system_us_per_delivery"] = \
            cpu["cpu_system_s"] * 1e6 / deliveries
        figures["voluntary_switches_per_delivery"] = \
            cpu["voluntary_switches"] / deliveries
        figures["server_cpu_share"] = cpu["cpu_s"] / throughput["seconds"]
        if figures.get("tasks", 1) == 1:
            # With many tasks this would add up their queueing for the one
            # CPU: only a one-task server's wait measures the other work.
            figures["server_wait_share"] = \
                cpu["wait_s"] / throughput["seconds"]
        figures["loadgen_cpu_share"] = throughput["loadgen_cpu_share"]
        figures["loadgen_wait_share"] = throughput.get("loadgen_wait_share")

    latency = load.get("latency")
    start, end = samples.get("latency-start"), samples.get("latency-end")
    if latency and latency["latency_us"]["count"] > 0:
        figures["latency_rate_per_s"] = latency["rate_per_s"]
        for key in ("p50", "p90", "p99", "p999", "max"):
            figures[f"latency_{key}_us"] = latency["latency_us"][key]
        figures["latency_send_lag_p99_us"] = latency["send_lag_us"]["p99"]
        figures["latency_loadgen_cpu_share"] = latency["loadgen_cpu_share"]
        if start and end:
            cpu = procstat.cpu_delta(start["cpu"], end["cpu"])
            figures["latency_server_cpu_share"] = \
                cpu["cpu_s"] / latency["seconds"]
            if figures.get("tasks", 1) == 1:
                figures["latency_server_wait_share"] = \
                    cpu["wait_s"] / latency["seconds"]
            behind = open_loop_verdict(latency)
            if behind:
                figures["open_loop_behind"] = behind
            elif latency.get("deliveries", 0) > 0:
                _per_delivery(figures, "open_loop_", cpu,
                              procstat.syscall_delta(start.get("syscalls"),
                                                     end.get("syscalls")),
                              latency["deliveries"])

    for key, value in (load.get("checks") or {}).items():
        figures[key] = value
    cluster_figures(run, figures)
    if "throughput_stalled" not in figures:
        cores = cores_figures(samples.get("throughput-start"),
                              samples.get("throughput-end"))
        if cores:
            figures["cores"] = cores
            for key in ("busy", "servers", "redis", "loadgen", "sweep",
                        "other", "idle"):
                figures["cores_" + key] = cores[key]
    return figures


def _numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def derive_all(results):
    """Sets every run's figures (runs["figures"]), with the machine's kernel
    stack size and the sweep's stall threshold."""
    stack = results["machine"].get("kernel_stack_bytes", 16384)
    min_fanouts = results["config"].get("min_fanouts", MIN_FANOUTS)
    for run in results["runs"]:
        run["figures"] = (derive(run, stack, min_fanouts)
                          if run["status"] != "skipped" else {})


def median_figures(runs):
    """Per (model, N): the median of each figure over the runs that passed,
    how many of them stalled (and what the first one saw), and the median
    system calls per delivery of each call."""
    groups = {}
    for run in runs:
        groups.setdefault((run["model"], run["clients"]), []).append(run)
    summary = {}
    for key, group in groups.items():
        passed = [r for r in group if r["status"] == "ok"]
        skipped = [r for r in group if r["status"] == "skipped"]
        medians = {"runs": len(group) - len(skipped), "passed": len(passed),
                   "skipped": len(skipped)}
        for figure in CSV_FIGURES:
            values = [r["figures"][figure] for r in passed
                      if _numeric(r["figures"].get(figure))]
            if values:
                medians[figure] = statistics.median(values)
                medians[figure + "_min"] = min(values)
                medians[figure + "_max"] = max(values)
        for text in TEXT_FIGURES:
            seen = [r["figures"][text] for r in passed
                    if r["figures"].get(text)]
            if seen:
                medians[text] = seen[0] if len(set(seen)) == 1 else \
                    ", ".join(seen)
        busy = {}
        for r in passed:
            for cpu, share in ((r["figures"].get("cores") or {})
                               .get("by_cpu") or {}).items():
                busy.setdefault(cpu, []).append(share)
        if busy:
            medians["cores_by_cpu"] = {cpu: statistics.median(values)
                                       for cpu, values in busy.items()}
        for text in ("throughput_stalled", "open_loop_behind"):
            seen = [r["figures"][text] for r in passed
                    if r["figures"].get(text)]
            medians[text + "_runs"] = len(seen)
            if seen:
                medians[text] = seen[0]
        for prefix in ("", "open_loop_"):
            calls = {}
            for r in passed:
                for name, value in (r["figures"].get(
                        prefix + "syscalls_by_call") or {}).items():
                    calls.setdefault(name, []).append(value)
            if calls:
                medians[prefix + "syscalls_by_call"] = {
                    name: statistics.median(values)
                    for name, values in calls.items()}
        methods = {r["figures"].get("syscall_method") for r in passed} - {None}
        if methods:
            medians["syscall_method"] = "/".join(sorted(methods))
        medians["errors"] = [r["error"] for r in group
                             if r["status"] != "ok" and r.get("error")]
        summary[key] = medians
    return summary


# ---------------------------------------------------------------------------
# Formatting


def fmt_bytes(value):
    if value is None:
        return "—"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def fmt_count(value):
    if value is None:
        return "—"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def fmt_us(value):
    if value is None:
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.3g} s"
    if value >= 1e3:
        return f"{value / 1e3:.3g} ms"
    return f"{value:.3g} µs"


def fmt_seconds(value):
    return "—" if value is None else f"{value:.3g} s"


def fmt_share(value):
    return "—" if value is None else f"{100 * value:.0f} %"


def fmt_plain(value, digits=3):
    """Three significant digits, never in exponent form (per-delivery
    counts run from 0.00002 to 1,000)."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    shown = f"{value:.{decimals}f}"
    return shown.rstrip("0").rstrip(".") if "." in shown else shown


def fmt_ratio(value):
    """A multiple: 1.5, 26, 3,700."""
    if value >= 100:
        digits = len(str(int(value))) - 2
        return f"{round(value, -digits):,.0f}"
    return f"{value:.2g}"


def one_line_summary(run):
    """The sweep's line on the terminal after each run."""
    if run["status"] != "ok":
        error = (run.get("error") or "").replace("\n", " ")
        return f"{run['status'].upper()}: {error[:200]}"
    f = derive(run)
    parts = ["ok"]
    if "connect_seconds" in f:
        parts.append(f"connect {f['connect_seconds']:.2f} s")
    if "user_bytes_per_conn" in f:
        parts.append(f"mem {fmt_bytes(f['user_bytes_per_conn'])}"
                     f"+{fmt_bytes(f['kernel_bytes_per_conn'])} kernel /conn")
    if "throughput_stalled" in f:
        parts.append("throughput " + f["throughput_stalled"])
    if "deliveries_per_s" in f:
        parts.append(f"{fmt_count(f['deliveries_per_s'])} deliveries/s")
        parts.append(f"{f['cpu_us_per_delivery']:.2f} µs CPU/delivery")
    if "syscalls_per_delivery" in f:
        parts.append(f"{f['syscalls_per_delivery']:.3g} syscalls/delivery")
    if "open_loop_syscalls_per_delivery" in f:
        parts.append(f"open loop {f['open_loop_cpu_us_per_delivery']:.3g} µs"
                     f" and {f['open_loop_syscalls_per_delivery']:.3g} "
                     f"syscalls/delivery")
    if "latency_p99_us" in f:
        parts.append(f"p99 {fmt_us(f['latency_p99_us'])}")
    if "clients_per_server" in f:
        parts.append(f"clients per server {f['clients_per_server']}")
    if "redis_cpu_us_per_line" in f:
        parts.append(f"Redis {fmt_us(f['redis_cpu_us_per_line'])} CPU, "
                     f"{f.get('evalsha_per_line', 0):.3g} EVALSHA and "
                     f"{f.get('xread_per_line', 0):.3g} XREAD per room line")
    if "cores_busy" in f:
        parts.append(f"cores: {cores_text(f['cores'])}")
    return ", ".join(parts)


def cores_text(cores, by_cpu=None):
    """Where the CPUs' time went: "CPU0 60 %, CPU1 100 % busy: servers
    0.98, Redis 0.2, chat-load 0.55, other 0.02 cores"."""
    if not cores:
        return "—"
    by_cpu = by_cpu if by_cpu is not None else cores.get("by_cpu", {})
    busy = ", ".join(f"CPU{cpu} {fmt_share(share)}"
                     for cpu, share in sorted(by_cpu.items(),
                                              key=lambda p: int(p[0])))
    parts = [f"servers {fmt_plain(cores.get('servers'), 2)}"]
    if cores.get("redis"):
        parts.append(f"Redis {fmt_plain(cores['redis'], 2)}")
    parts.append(f"chat-load {fmt_plain(cores.get('loadgen'), 2)}")
    parts.append(f"sweep {fmt_plain(cores.get('sweep'), 2)}")
    parts.append(f"other {fmt_plain(cores.get('other'), 2)}")
    parts.append(f"idle {fmt_plain(cores.get('idle'), 2)}")
    return f"{busy} busy; " + ", ".join(parts) + " cores"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Why a model broke: the error text, read for its usual cause


CAUSES = [
    ("Resource temporarily unavailable",
     "fork() or pthread_create() refused (EAGAIN): RLIMIT_NPROC, "
     "kernel.pid_max or kernel.threads-max"),
    ("Cannot allocate memory",
     "out of memory or address space (ENOMEM): thread stacks, "
     "vm.max_map_count or RAM"),
    ("Too many open files", "out of file descriptors (EMFILE): ulimit -n"),
    ("Server full", "the server refused clients: --max-clients, or it ran "
     "out of descriptors"),
    ("Connection refused", "the server was not accepting (ECONNREFUSED)"),
    ("Connection reset", "the server reset connections (ECONNRESET): "
     "accept backlog overflow or a crash"),
    ("Cannot assign requested address",
     "out of ephemeral ports (EADDRNOTAVAIL)"),
    ("departed", "the server dropped a client (slow or lapped)"),
    ("server exited", "the server died during the run"),
    ("deadline", "too slow: a phase did not finish before its deadline"),
    ("missing", "deliveries lost"),
    ("duplicated", "deliveries duplicated"),
    ("out of order", "deliveries out of order"),
]


def say_shutdowns(say, runs, model):
    """docs/PROTOCOL.md: on SIGTERM a server exits 0 within 2 seconds. The sweep
    stops every server that way, so it notes the ones that did not."""
    slow = [r for r in runs if r["model"] == model and r.get("server_exit")
            and not r["server_exit"].get("exited_during_run")
            and (r["server_exit"]["status"] != 0 or
                 r["server_exit"]["seconds"] > 2)]
    for r in slow:
        status = r["server_exit"]["status"]
        waited = r["server_exit"].get("waited_s", 5)
        how = (f"had not exited after {waited:g} s and was killed"
               if status is None
               else f"exited with status {status} after "
                    f"{r['server_exit']['seconds']:.1f} s")
        say(f"  - on SIGTERM at N = {r['clients']:,} (run {r['repeat']}) it "
            f"{how} (docs/PROTOCOL.md: status 0 within 2 s).")


def likely_cause(error):
    for needle, cause in CAUSES:
        if needle in error:
            return cause
    return "see the error"


# ---------------------------------------------------------------------------
# Charts


def gnuplot_terminals():
    """Which PNG terminal this gnuplot has (pngcairo draws better)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return None
    out = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True,
                         text=True, timeout=30)
    text = out.stdout + out.stderr
    return "pngcairo" if "pngcairo" in text else "png"


THROUGHPUT_FIGURES = ("deliveries_per_s", "cpu_us_per_delivery",
                      "syscalls_per_delivery", "switches_per_delivery")


CLUSTER_NAME = re.compile(r"^(.+)-x(\d+)$")  # sweep --cluster K: NAME-xK
CLUSTER_DASHES = ["(3,3)", "(8,3,2,3)", "(1,3)"]


def model_styles(models):
    """Colour, point type and dash per model. A cluster (NAME-xK) takes its
    model's colour with the open form of its point and a dash of its own,
    so that it reads as "the same model, as a cluster" beside it."""
    styles = dict(STYLES)
    extra = []
    for model in models:
        if model in styles:
            continue
        match = CLUSTER_NAME.match(model)
        if match and match.group(1) in STYLES:
            colour, point, _ = STYLES[match.group(1)]
            sizes = sorted({int(CLUSTER_NAME.match(m).group(2))
                            for m in models if CLUSTER_NAME.match(m) and
                            CLUSTER_NAME.match(m).group(1) ==
                            match.group(1)})
            dash = CLUSTER_DASHES[sizes.index(int(match.group(2))) %
                                  len(CLUSTER_DASHES)]
            styles[model] = (colour, point - 1, dash)
        else:
            extra.append(model)
    used = {style[1] for style in styles.values()}
    free = [s for s in EXTRA_STYLES if s[1] not in used] or EXTRA_STYLES
    for i, model in enumerate(extra):
        styles[model] = free[i % len(free)]
    return styles


def why_missing(model, n, figure, summary, scale=1):
    """Why a chart has no point for this model at this N (None: it has)."""
    s = summary.get((model, n))
    if s is None:
        return "not run"
    if s["runs"] == 0:
        return "skipped: every run failed at a smaller N"
    if s["passed"] == 0:
        error = (s.get("errors") or ["?"])[0]
        return f"no run passed ({likely_cause(error)})"
    value = s.get(figure)
    if value is not None:
        if value * scale > 0:
            return None
        shown = (fmt_bytes(value) if figure in MEMORY_FIGURES
                 else fmt_plain(value))
        return (f"measured {shown}, not above zero: noise, which a log "
                f"scale cannot show")
    if figure in THROUGHPUT_FIGURES and s.get("throughput_stalled_runs"):
        return "stalled (no rate; see the C10K table's notes)"
    if figure.startswith("open_loop_") and s.get("open_loop_behind_runs"):
        return "behind its open-loop schedule (no cost per delivery)"
    if "syscalls" in figure:
        return "system calls not counted (--no-syscalls, or an older run)"
    return "not measured"


def coinciding(models, clients, figure, summary, scale):
    """Pairs of models whose lines lie on each other (within 5 % at every N
    both have, at least two of them)."""
    pairs = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            shared = []
            for n in clients:
                va = summary.get((a, n), {}).get(figure)
                vb = summary.get((b, n), {}).get(figure)
                if va is not None and vb is not None and va * scale > 0 \
                        and vb * scale > 0:
                    shared.append(max(va, vb) / min(va, vb))
            if len(shared) >= 2 and max(shared) <= 1.05:
                pairs.append((a, b))
    return pairs


def y_axis(values, si):
    """The y range and tics of a log-scale chart, labelled in plain numbers
    (1, 10, 1,000, 0.001) or, for counts, with k and M: never 1e+06 nor
    gnuplot's SI prefixes on a time ("100m" read as minutes)."""
    low, high = min(values) / 1.5, max(values) * 1.5
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    tics = []
    for steps in ((1,), (1, 2, 5), range(1, 10)):  # finer when few
        tics = [m * 10.0 ** d for d in range(first, last + 1) for m in steps]
        tics = [t for t in tics if low <= t <= high]
        if len(tics) >= 3:
            break

    def label(value):
        if si and value >= 1000:
            for unit, size in (("M", 1e6), ("k", 1e3)):
                if value >= size:
                    return f"{value / size:g}{unit}"
        if value >= 1:
            return f"{value:,.0f}"
        return f"{value:.{-math.floor(math.log10(value))}f}"

    return low, high, ", ".join(f"'{label(t)}' {t:g}" for t in tics)


def write_charts(folder, models, clients, summary, subtitle):
    """A data file and a gnuplot script per chart; renders SVG and PNG
    when gnuplot is there. Returns the charts written, each with the notes
    that go under it (missing points and why, lines that coincide), and a
    note for all of them."""
    charts_dir = os.path.join(folder, "charts")
    os.makedirs(charts_dir, exist_ok=True)
    png_terminal = gnuplot_terminals()
    styles = model_styles(models)
    written = []
    # Each model's points are drawn a few percent apart sideways, so that
    # equal values (1 task for every one-thread server) do not hide each
    # other; the data files keep the exact N.
    spread = 1.09
    dodge = {model: spread ** (i - (len(models) - 1) / 2)
             for i, model in enumerate(models)}
    for name, figure, title, ylabel, scale, y_format in CHARTS:
        values = [summary.get((m, n), {}).get(figure) for m in models
                  for n in clients]
        values = [v * scale for v in values if v is not None and v * scale > 0]
        if not values:
            continue
        y_low, y_high, y_tics = y_axis(values, y_format == SI)
        data_path = os.path.join(charts_dir, name + ".dat")
        with open(data_path, "w") as f:
            f.write(f"# N, then {figure} x {scale:g} per model: "
                    + " ".join(models) + "\n")
            for n in clients:
                values = []
                for model in models:
                    value = summary.get((model, n), {}).get(figure)
                    values.append("NaN" if value is None or value * scale <= 0
                                  else f"{value * scale:.6g}")
                f.write(f"{n} " + " ".join(values) + "\n")
        plots = ", ".join(
            f"'{name}.dat' using ($1*{dodge[model]:.4f}):{i + 2} with "
            f"linespoints lw 2 dt {styles[model][2]} pt {styles[model][1]} "
            f"ps 1.3 lc rgb '{styles[model][0]}' title '{model}'"
            for i, model in enumerate(models))
        xtics = ", ".join(f"'{n:,}' {n}" for n in clients)
        low = min(clients) / (1.6 * spread ** (len(models) / 2))
        high = max(clients) * 1.6 * spread ** (len(models) / 2)
        script = f"""# {title}: one line per model, median of the passed runs.
# Rendered by report.py; run it again with: gnuplot {name}.gp
# Each model's points are nudged sideways (x {spread:g} per model) so that
# equal values stay visible; {name}.dat has the exact N.
set title "{title}\\n{{/*0.8 {subtitle}}}"
set xlabel "concurrent connections N (log scale; points nudged sideways so none hides another)"
set ylabel "{ylabel} (log scale)"
set logscale xy 10
set xtics ({xtics})
set xrange [{low:.3g}:{high:.3g}]
set yrange [{y_low:.4g}:{y_high:.4g}]
set ytics ({y_tics})
set grid xtics ytics mytics lc rgb '#dddddd' lw 1
set key outside right top box
set border 3
set tics nomirror
set datafile missing 'NaN'
set terminal svg size 900,520 dynamic enhanced font 'Helvetica,13' background rgb 'white'
set output '{name}.svg'
plot {plots}
"""
        if png_terminal:
            script += (f"set terminal {png_terminal} size 900,520 enhanced "
                       f"font 'Helvetica,11' background rgb 'white'\n"
                       f"set output '{name}.png'\nreplot\n")
        with open(os.path.join(charts_dir, name + ".gp"), "w") as f:
            f.write(script)
        if png_terminal:
            result = subprocess.run(["gnuplot", name + ".gp"], cwd=charts_dir,
                                    capture_output=True, text=True,
                                    timeout=60)
            if result.returncode != 0:
                print(f"report: gnuplot {name}.gp: {result.stderr.strip()}",
                      file=sys.stderr)
                continue
        notes = []
        missing = []
        for model in models:
            for n in clients:
                why = why_missing(model, n, figure, summary, scale)
                if why:
                    missing.append(f"{model} at N = {n:,}: {why}")
        if missing:
            notes.append("No point for " + "; ".join(missing) + ".")
        for a, b in coinciding(models, clients, figure, summary, scale):
            notes.append(f"{a} and {b} coincide (within 5 % at every N both "
                         f"have): their points sit side by side, the lines "
                         f"on each other.")
        if figure in THROUGHPUT_FIGURES:
            partly = [f"{model} at N = {n:,} ({s['throughput_stalled_runs']} "
                      f"of {s['passed']} runs)"
                      for model in models for n in clients
                      for s in [summary.get((model, n), {})]
                      if s.get("throughput_stalled_runs") and
                      s.get(figure) is not None]
            if partly:
                notes.append("Some runs stalled, and the point is the median "
                             "of the others: " + "; ".join(partly) + ".")
        if figure in MEMORY_FIGURES:
            notes.append("At N = 10, and often at 100, this is a page or two "
                         "of memory over a few connections (and the Slab "
                         "part is system-wide): noise, at times below zero. "
                         "Read it from N = 1,000 up.")
        written.append((name, title, notes))
    note = None if png_terminal else \
        "gnuplot was not found: the charts' data and scripts are in charts/"
    return written, note


# ---------------------------------------------------------------------------
# The report


def evaluate_targets(models, clients, summary, runs):
    """The issue's targets, each with what was measured and a verdict."""
    rows = []
    biggest = 10000
    for model in models:
        at = summary.get((model, biggest))
        if at is None:
            rows.append((f"{model} completes N = 10,000", "not run",
                         "not measured"))
        else:
            rows.append((f"{model} completes N = 10,000",
                         (f"{at['passed']} of {at['runs']} runs passed" +
                          (f" ({at['skipped']} skipped)"
                           if at.get("skipped") else ""))
                         if at["runs"] else "skipped (failed at a smaller N)",
                         "met" if at["passed"] > 0 else "NOT MET"))
    evented = summary.get(("evented", 1000))
    cpu = evented.get("cpu_us_per_delivery") if evented else None
    rows.append(("evented, N = 1,000, 10 senders: server CPU per delivery "
                 "≤ 0.5 µs", fmt_us(cpu) if cpu is not None else "not run",
                 "not measured" if cpu is None else
                 ("met" if cpu <= 0.5 else "NOT MET")))
    peer = summary.get(("asyncio", 1000))
    if evented and peer and evented.get("deliveries_per_s") and \
            peer.get("deliveries_per_s"):
        ratio = evented["deliveries_per_s"] / peer["deliveries_per_s"]
        rows.append(("evented, N = 1,000: deliveries/s ≥ 20 × the asyncio "
                     "peer's", f"{ratio:.1f} × ({fmt_count(evented['deliveries_per_s'])}"
                     f" vs {fmt_count(peer['deliveries_per_s'])})",
                     "met" if ratio >= 20 else "NOT MET"))
    else:
        rows.append(("evented, N = 1,000: deliveries/s ≥ 20 × the asyncio "
                     "peer's", "not run (needs both at N = 1,000)",
                     "not measured"))
    at = summary.get(("evented", biggest))
    memory = at.get("user_bytes_per_conn") if at else None
    rows.append(("evented, N = 10,000: user-space memory per idle "
                 "connection ≤ 1 KiB",
                 fmt_bytes(memory) if memory is not None else "not run",
                 "not measured" if memory is None else
                 ("met" if memory <= 1024 else "NOT MET")))
    for label, load_key, server_key in (
            ("throughput", "loadgen_cpu_share", "server_cpu_share"),
            ("latency", "latency_loadgen_cpu_share",
             "latency_server_cpu_share")):
        checked, worse = 0, []
        for run in runs:
            f = run["figures"]
            if run["model"] != "evented" or run["status"] != "ok" or \
                    f.get(load_key) is None or f.get(server_key) is None:
                continue
            checked += 1
            if f[load_key] >= f[server_key]:
                worse.append(f"N = {run['clients']:,}: "
                             f"{fmt_share(f[load_key])} vs "
                             f"{fmt_share(f[server_key])}")
        rows.append((f"every evented run: the load generator uses less CPU "
                     f"than the server ({label} windows)",
                     f"{checked - len(worse)} of {checked} windows" +
                     (f"; not in {'; '.join(worse)}" if worse else ""),
                     "not measured" if checked == 0 else
                     ("met" if not worse else "NOT MET")))

    # Issue 10: every model at its own floor, and no rate from a stall.
    for n in (1000, 10000):
        base = summary.get(("evented", n), {}).get("cpu_us_per_delivery")
        mine = summary.get(("forking", n), {}).get("cpu_us_per_delivery")
        label = (f"forking, N = {n:,}: CPU per delivery within 3 × evented's "
                 f"(closed loop)")
        if base is None or mine is None:
            stalled = summary.get(("forking", n), {}).get(
                "throughput_stalled_runs")
            rows.append((label, "stalled" if stalled else "not measured",
                         "NOT MET" if stalled else "not measured"))
        else:
            rows.append((label, f"{fmt_ratio(mine / base)} × ({fmt_us(mine)} "
                                f"vs {fmt_us(base)})",
                         "met" if mine <= 3 * base else "NOT MET"))
    stalled = [r for r in runs if r["status"] == "ok" and
               r["figures"].get("throughput_stalled")]
    windows = [r for r in runs if r["status"] == "ok" and
               r["figures"].get("window_seconds") is not None]
    rows.append(("no run reports a rate from a stalled window",
                 f"{len(stalled)} of {len(windows)} throughput windows "
                 f"stalled" + (": " + ", ".join(
                     f"{r['model']} N = {r['clients']:,}" for r in stalled)
                     if stalled else "") + "; none is given a rate",
                 "not measured" if not windows else
                 ("met" if not stalled else
                  f"met ({len(stalled)} reported as stalled)")))
    ev = summary.get(("evented", 1000), {})
    th = summary.get(("threaded", 1000), {})
    a = ev.get("open_loop_cpu_us_per_delivery")
    b = th.get("open_loop_cpu_us_per_delivery")
    rows.append(("evented, N = 1,000, open loop: CPU per delivery below "
                 "threaded's",
                 "not measured" if a is None or b is None else
                 f"{fmt_us(a)} vs {fmt_us(b)}",
                 "not measured" if a is None or b is None else
                 ("met" if a < b else "NOT MET")))
    calls = ev.get("open_loop_syscalls_per_delivery")
    rows.append(("evented, N = 1,000, open loop: ≤ 1.1 system calls per "
                 "delivery",
                 "not measured" if calls is None else f"{calls:.3g}",
                 "not measured" if calls is None else
                 ("met" if calls <= 1.1 else "NOT MET")))
    return rows


def passed_text(s):
    """"2/3": passed runs of those that ran, and the skipped ones."""
    if not s:
        return "not run"
    if s["runs"] == 0:
        return "skipped"
    text = f"{s['passed']}/{s['runs']}"
    return text + (f" ({s['skipped']} skipped)" if s.get("skipped") else "")


def stalled_cell(s, value_text):
    """A throughput cell: the figure, or "stalled" when every passed run's
    window stalled (with some stalled, the others give the figure)."""
    if value_text != "—" or not s.get("throughput_stalled_runs") or \
            s["throughput_stalled_runs"] < s.get("passed", 0):
        return value_text
    return "**stalled**"


def c10k_table(models, n, summary):
    """The talk's table, one row per model, with the figures at N. A
    throughput window that stalled in every run shows "stalled" instead of
    a rate; stalled_notes() says what was seen."""
    rows = []
    for model in models:
        row_name, how, who = C10K_ROWS.get(model, (model, model, ""))
        s = summary.get((model, n), {})
        done = passed_text(s)
        rows.append((f"**{row_name}**", f"`chat-{model}`: {how}", who, done,
                     fmt_bytes(s.get("user_bytes_per_conn")),
                     fmt_bytes(s.get("kernel_bytes_per_conn")),
                     fmt_count(s.get("tasks")),
                     stalled_cell(s, fmt_us(s.get("cpu_us_per_delivery"))),
                     stalled_cell(s, fmt_plain(s.get(
                         "syscalls_per_delivery"))),
                     stalled_cell(s, fmt_plain(s.get(
                         "switches_per_delivery"))),
                     stalled_cell(s, fmt_count(s.get("deliveries_per_s"))),
                     fmt_us(s.get("latency_p99_us")),
                     fmt_seconds(s.get("connect_seconds"))))
    return table(["Model", "Server", "Who uses it (the talk)",
                  f"Passed at {n:,}", "User memory / conn",
                  "Kernel memory / conn", "Tasks", "CPU / delivery",
                  "Syscalls / delivery", "Switches / delivery",
                  "Deliveries / s", "p99 latency", "Connect all"], rows)


def stalled_notes(models, clients, summary):
    """One line per model and N where a throughput window stalled: what was
    seen in it, and whether the figures shown come from other runs."""
    lines = []
    for model in models:
        for n in clients:
            s = summary.get((model, n), {})
            if not s.get("throughput_stalled_runs"):
                continue
            some = s["throughput_stalled_runs"] < s["passed"]
            lines.append(
                f"- **{model}** at N = {n:,}: "
                f"{s['throughput_stalled_runs']} of {s['passed']} passed "
                f"run(s) {s['throughput_stalled']}"
                + ("; its figures are the median of the other runs." if some
                   else "; no rate and no cost per delivery is given."))
    return lines


def open_loop_table(models, points, summary):
    """Per model at each N of points: the open-loop (latency workload)
    costs per delivery beside the closed-loop ones."""
    rows = []
    for n in points:
        for model in models:
            s = summary.get((model, n))
            if not s or not s.get("passed"):
                continue
            behind = s.get("open_loop_behind_runs")
            rows.append((
                model, f"{n:,}", fmt_plain(s.get("latency_rate_per_s")),
                ("behind" if behind and
                 s.get("open_loop_cpu_us_per_delivery") is None else
                 fmt_us(s.get("open_loop_cpu_us_per_delivery"))),
                fmt_plain(s.get("open_loop_syscalls_per_delivery")),
                fmt_plain(s.get("open_loop_switches_per_delivery")),
                fmt_us(s.get("latency_p99_us")),
                stalled_cell(s, fmt_us(s.get("cpu_us_per_delivery"))),
                stalled_cell(s, fmt_plain(s.get("syscalls_per_delivery"))),
                stalled_cell(s, fmt_plain(s.get("switches_per_delivery")))))
    return table(["Model", "N", "Open loop: R msg/s", "CPU / delivery",
                  "Syscalls / delivery", "Switches / delivery",
                  "p99 latency", "Closed loop: CPU / delivery",
                  "Syscalls / delivery", "Switches / delivery"], rows)


def syscall_breakdown(models, points, summary, clients):
    """The system calls per delivery by call, where the per-call counters
    were attached (a tree of few tasks), open and closed loop: at the N of
    points, or for a model counted call by call at none of them (too many
    tasks), at the largest N where it was."""
    chosen = []
    for model in models:
        counted = [n for n in clients
                   if summary.get((model, n), {}).get("syscalls_by_call") or
                   summary.get((model, n), {}).get(
                       "open_loop_syscalls_by_call")]
        at = [n for n in points if n in counted] or counted[-1:]
        chosen += [(n, model) for n in at]
    rows = []
    for n, model in sorted(chosen, key=lambda p: (p[0], models.index(p[1]))):
        s = summary.get((model, n), {})
        for label, prefix in (("open", "open_loop_"), ("closed", "")):
            calls = s.get(prefix + "syscalls_by_call")
            if not calls:
                continue
            ranked = sorted(((v, k) for k, v in calls.items()
                             if k != "other" and v >= 0.005),
                            reverse=True)
            text = ", ".join(f"{name} {value:.3g}"
                             for value, name in ranked[:8])
            if calls.get("other", 0) >= 0.005:
                text += f", other {calls['other']:.3g}"
            rows.append((model, f"{n:,}", label,
                         fmt_plain(s.get(prefix +
                                         "syscalls_per_delivery")),
                         text or "—"))
    if not rows:
        return None
    return table(["Model", "N", "Loop", "Syscalls / delivery",
                  "By call, per delivery"], rows)


def syscall_method_text(results, summary):
    how = results["machine"].get("syscall_counting")
    if how is None:
        return ("nothing: this sweep did not count them (its runs.json "
                "predates the counters)")
    if how == "perf":
        return ("the kernel: a perf counter on the raw_syscalls:sys_enter "
                "tracepoint for every task of the tree, attached once the "
                "clients are connected (after the memory samples), read at "
                "each window's edges")
    return how


REFERENCE_LATENCY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "latency", "reference", "latency.csv")


def _latency_rows(path):
    rows = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("median_ns"):
                    rows[row["id"]] = {"event": row["event"],
                                       "median_ns": float(row["median_ns"]),
                                       "method": row.get("method", "")}
    except (OSError, csv.Error):
        pass
    return rows


def machine_cost_lines(machine, summary=None, models=(), n=None):
    """The machine's process switch, thread switch and page-fault cost (and
    what counting system calls adds), and what they make of the process and
    thread models' figures."""
    costs = machine.get("costs") or {}
    lines = []
    tool = costs.get("latency_tool") or {}
    rows = tool.get("rows")
    source = None
    measured_here = bool(rows)
    pipe_ns = 0.0
    if rows:
        source = (f"chat-latency ({tool.get('note', '')}, "
                  f"{tool.get('date', '?')[:16]}, `{tool.get('source')}`)")
    else:
        rows = _latency_rows(REFERENCE_LATENCY)
        if rows:
            source = ("chat-latency's committed reference run "
                      "(`bench/latency/reference/latency.csv`: another "
                      "moment, perhaps another machine; this sweep did not "
                      "measure them"
                      + (f": {tool['error']}" if tool.get("error") else "")
                      + ")")
    if rows:
        def ns(row_id):
            row = rows.get(row_id)
            return fmt_us(row["median_ns"] / 1e3) if row else "—"
        pipe = ""
        method = (rows.get("process_switch") or {}).get("method", "")
        alone = method.split("alone:", 1)[1].split()[:2] \
            if "alone:" in method else []
        if len(alone) == 2 and alone[1].startswith("ns"):
            pipe_ns = float(alone[0])
            pipe = (f" (each includes one pipe write and read, "
                    f"{fmt_us(pipe_ns / 1e3)} alone)")
        lines.append(
            f"- **Process context switch** {ns('process_switch')}, **thread "
            f"switch** {ns('thread_switch')}{pipe}; fork + exit + wait "
            f"{ns('fork')}, pthread_create + join {ns('pthread')}, an epoll "
            f"wake-up with no switch {ns('epoll')}. Medians from {source}.")
    else:
        lines.append("- Process and thread switch: not measured"
                     + (f" ({tool['error']})" if tool.get("error") else "")
                     + ".")
    fault = costs.get("page_fault") or {}
    if fault.get("ns") is not None:
        lines.append(f"- **Minor page fault** {fmt_us(fault['ns'] / 1e3)} "
                     f"(min {fmt_us(fault['min_ns'] / 1e3)}; "
                     f"{fault['method']}; {fault['faults_per_try']:,} faults "
                     f"counted per try). A forked child faults on every page "
                     f"it writes first (copy-on-write), a thread's stack and "
                     f"a heap on every fresh page.")
    else:
        lines.append("- Minor page fault: not measured by this sweep"
                     + (f" ({fault['error']})" if fault.get("error") else "")
                     + ".")
    call = costs.get("syscall") or {}
    if call.get("overhead_ns") is not None:
        lines.append(f"- **Counting system calls** costs "
                     f"{call['overhead_ns']:.0f} ns per call while the "
                     f"counters are attached (a getppid from Python: "
                     f"{call['plain_ns']:.0f} ns, {call['counted_ns']:.0f} ns "
                     f"counted), on every task of the machine: the CPU "
                     f"figures include it, about that much times the system "
                     f"calls per delivery (`--no-syscalls` measures without "
                     f"it).")
    # What switches cost the process and thread models, with this sweep's
    # own switch figures (the pipe write and read taken out).
    if summary and measured_here and n is not None:
        for model, row_id in (("forking", "process_switch"),
                              ("threaded", "thread_switch")):
            s = summary.get((model, n), {})
            row = rows.get(row_id)
            if model not in models or not row:
                continue
            switch_us = max(row["median_ns"] - pipe_ns, 0) / 1e3
            for prefix, loop in (("", "closed"), ("open_loop_", "open")):
                per = s.get(prefix + "switches_per_delivery")
                cpu = s.get(prefix + "cpu_us_per_delivery")
                if per and cpu and switch_us > 0:
                    spent = per * switch_us
                    lines.append(
                        f"- {model} at N = {n:,}, {loop} loop: "
                        f"{fmt_plain(per)} switches per delivery × "
                        f"{fmt_us(switch_us)} ≈ {fmt_us(spent)} "
                        f"({100 * spent / cpu:.0f} %) of its {fmt_us(cpu)} "
                        f"of CPU per delivery.")
    return lines


# Which heap policy a model runs with, when the sweep did not record it
# (older runs.json, or a model it could not read the sources of).
HEAP_POLICY_DEFAULT = {
    "asyncio": "CPython's own allocator (pymalloc over glibc malloc, "
               "default settings): not the C models' policy",
}


def heap_policy_lines(results, models):
    recorded = {m["name"]: m.get("heap_policy") for m in results["models"]}
    lines = []
    for model in models:
        policy = recorded.get(model) or HEAP_POLICY_DEFAULT.get(model) or \
            "not recorded by this sweep (see common/os/heap.h)"
        lines.append(f"- **{model}**: {policy}")
    return lines


README_BEGIN = "<!-- reference:begin -->"
README_END = "<!-- reference:end -->"


def update_readme(folder, readme):
    """Rewrites the part of README between the reference markers with the
    folder's C10K table and one chart (links relative to the README)."""
    with open(os.path.join(folder, "runs.json")) as f:
        results = json.load(f)
    derive_all(results)
    models = [m["name"] for m in results["models"]]
    n = max(results["config"]["clients"])
    summary = median_figures(results["runs"])
    machine = results["machine"]
    where = os.path.relpath(folder, os.path.dirname(os.path.abspath(readme)))
    block = "\n".join([
        README_BEGIN,
        f"The reference run ([full report]({where}/report.md)): "
        f"{results['config']['mode']} sweep on {machine['cpu']} "
        f"({machine['cpus_online']} CPUs), Linux {machine['kernel']}, "
        f"{machine['date'][:10]}; {machine['pinning']}. "
        + quietness(results["runs"]),
        "",
        f"**The talk's C10K table at N = {n:,}** (medians of the passed "
        f"runs):",
        "",
        c10k_table(models, n, summary),
        "",
        *([("**Stalled**: the throughput window held too little to "
            "measure; what was seen:"), ""]
          + stalled_notes(models, [n], summary) + [""]
          if stalled_notes(models, [n], summary) else []),
        what_the_numbers_say(models, n, summary),
        f"![User-space memory per idle connection]"
        f"({where}/charts/memory-user.png)",
        "",
        "More charts: " + ", ".join(
            f"[{label}]({where}/charts/{name}.svg)" for label, name in (
                ("kernel memory", "memory-kernel"),
                ("CPU per delivery", "cpu-per-delivery"),
                ("in open loop", "cpu-per-delivery-open-loop"),
                ("system calls per delivery", "syscalls-per-delivery"),
                ("in open loop", "syscalls-per-delivery-open-loop"),
                ("deliveries per second", "deliveries"),
                ("p99 latency", "latency-p99"),
                ("connect time", "connect"), ("tasks", "tasks"))
            if os.path.exists(os.path.join(folder, "charts", name + ".svg")))
        + ".",
        README_END])
    with open(readme) as f:
        text = f.read()
    start, end = text.index(README_BEGIN), text.index(README_END)
    with open(readme, "w") as f:
        f.write(text[:start] + block + text[end + len(README_END):])


def quietness(runs):
    """How much other work got in the way, from the single-task servers'
    time ready to run but waiting for a CPU (the load average also counts
    the sweep's own thousands of tasks, long after they are gone)."""
    waits = [r["figures"].get("server_wait_share") for r in runs
             if r["status"] == "ok" and r["figures"].get("tasks") == 1 and
             r["figures"].get("server_wait_share") is not None]
    if not waits:
        return ""
    wait = statistics.median(waits)
    return (f"The single-task servers waited for a CPU "
            f"{fmt_share(wait)} of their measured time (median): "
            + ("a quiet machine." if wait < 0.05 else
               "a machine shared with other work: read the figures as lower "
               "bounds."))


def what_the_numbers_say(models, n, summary):
    """One sentence per model: its cost at N as a multiple of chat-evented's
    (the talk's argument, in this machine's numbers)."""
    base = summary.get(("evented", n), {})
    if not base.get("passed"):
        return (f"chat-evented has no passed run at N = {n:,}: no comparison "
                f"is drawn.\n")
    lines = [f"What the numbers say at N = {n:,}, against chat-evented "
             f"({fmt_bytes(base.get('user_bytes_per_conn'))} of user memory "
             f"and {fmt_bytes(base.get('kernel_bytes_per_conn'))} of kernel "
             f"memory per connection, {fmt_us(base.get('cpu_us_per_delivery'))}"
             f" of CPU per delivery, {fmt_count(base.get('deliveries_per_s'))}"
             f" deliveries per second"
             + (" (its own throughput window stalled)"
                if base.get("throughput_stalled_runs") and
                base.get("cpu_us_per_delivery") is None else "")
             + "):\n"]

    def times(value, reference, inverse=False):
        if value is None or reference is None or value <= 0 or reference <= 0:
            return None
        ratio = reference / value if inverse else value / reference
        if ratio >= 100:  # two significant digits, written out
            digits = len(str(int(ratio))) - 2
            return f"{round(ratio, -digits):,.0f}×"
        return f"{ratio:.2g}×"

    for model in models:
        if model == "evented":
            continue
        s = summary.get((model, n), {})
        if not s.get("passed"):
            failed = s.get("errors") or ["not run"]
            lines.append(f"- **{model}** did not complete N = {n:,}: "
                         f"{failed[0][:160]}")
            continue
        parts = []
        for label, key, inverse in (
                ("the user memory", "user_bytes_per_conn", False),
                ("the kernel memory", "kernel_bytes_per_conn", False),
                ("the CPU per delivery", "cpu_us_per_delivery", False),
                ("the p99 latency", "latency_p99_us", False),
                ("the time to connect everyone", "connect_seconds", False)):
            ratio = times(s.get(key), base.get(key), inverse)
            if ratio:
                parts.append(f"{ratio} {label}")
        mine, theirs = s.get("deliveries_per_s"), base.get("deliveries_per_s")
        if mine and theirs and mine > theirs:
            parts.append(f"{times(mine, theirs)} the deliveries per second")
        elif mine and theirs:
            rate = times(mine, theirs, inverse=True)
            parts.append(f"1/{rate[:-1]} of the deliveries per second")
        calls = times(s.get("open_loop_syscalls_per_delivery"),
                      base.get("open_loop_syscalls_per_delivery"))
        if calls:
            parts.append(f"{calls} the system calls per delivery in open "
                         f"loop")
        if s.get("throughput_stalled_runs") and \
                s.get("cpu_us_per_delivery") is None:
            parts.append("no rate: its throughput window "
                         f"{s['throughput_stalled']}")
        lines.append(f"- **{model}**, with {fmt_count(s.get('tasks'))} "
                     f"task(s): " + ", ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def cluster_models(results):
    """{name: {"model": base model, "servers": K}} of the sweep's clusters
    (sweep --cluster K: K servers of a model sharing a port and a room
    through Redis, model NAME-xK)."""
    found = {m["name"]: m["cluster"] for m in results.get("models", [])
             if m.get("cluster")}
    for run in results.get("runs", []):
        info = run.get("cluster")
        if info and run["model"] not in found:
            found[run["model"]] = {"model": info["model"],
                                   "servers": info["servers"]}
    return found


CLUSTER_GOAL_RATIO = 1.3  # issue 14: servers + Redis against one server


def _summary_cores(s):
    if s.get("cores_busy") is None:
        return None
    return {key: s.get("cores_" + key) for key in
            ("busy", "servers", "redis", "loadgen", "sweep", "other",
             "idle")}


def times_text(ratio):
    """A ratio to one server: 1.17 ×, 21 ×."""
    return f"{ratio:.2f} ×" if ratio < 10 else f"{fmt_ratio(ratio)} ×"


def cluster_goal_rows(clusters, clients, summary):
    """Issue 14's goals for each cluster, measured: its CPU per delivery
    (every server plus Redis) within CLUSTER_GOAL_RATIO of one server's at
    N = 1,000 and 10,000, and at 10,000 every client connected and every
    line delivered (a passed run: chat-load checked every line)."""
    rows = []
    for name, info in clusters.items():
        base = info["model"]
        for n, prefix in ((1000, ""), (1000, "open_loop_"), (10000, ""),
                          (10000, "open_loop_")):
            label = (f"{name} ({info['servers']} × chat-{base} + Redis), "
                     f"N = {n:,}: CPU per delivery, servers + Redis, ≤ "
                     f"{CLUSTER_GOAL_RATIO:g} × one chat-{base}'s"
                     + (" (open loop)" if prefix else " (closed loop)"))
            many = summary.get((name, n), {})
            one = summary.get((base, n), {})
            a = many.get(prefix + "total_cpu_us_per_delivery")
            b = one.get(prefix + "total_cpu_us_per_delivery")
            if prefix and (a is None or not b):
                behind = many.get("open_loop_behind_runs") or \
                    one.get("open_loop_behind_runs")
                rows.append((label, "behind its schedule: no cost given"
                             if behind else "not measured (needs a passed "
                             "run of both at this N)", "not measured"))
            elif a is not None and b:
                rows.append((label, f"{times_text(a / b)} ({fmt_us(a)} vs "
                                    f"{fmt_us(b)})",
                             "met" if a <= CLUSTER_GOAL_RATIO * b
                             else "NOT MET"))
            elif many.get("throughput_stalled_runs") or \
                    one.get("throughput_stalled_runs"):
                rows.append((label, "stalled: no rate", "not measured"))
            else:
                rows.append((label, "not measured (needs a passed run of "
                                    "both at this N)", "not measured"))
        many = summary.get((name, 10000))
        label = (f"{name}, N = 10,000: every client connected and every "
                 f"line delivered")
        if not many or not many.get("runs"):
            rows.append((label, "not run", "not measured"))
        else:
            lost = sum(many.get(key, 0) or 0 for key in
                       ("missing", "duplicated", "out_of_order",
                        "undelivered_at_deadline", "disconnected"))
            spread = many.get("clients_per_server")
            rows.append((label,
                         f"{many['passed']} of {many['runs']} runs passed "
                         f"every check" + (f" (clients per server: {spread})"
                                           if spread else "")
                         + (f"; median {lost:g} lines lost" if lost else ""),
                         "met" if many["passed"] == many["runs"] else
                         "NOT MET"))
    return rows


def cluster_section(results, clients, summary):
    """The clusters beside one server of their model: markdown, or None
    when the sweep ran no cluster."""
    clusters = cluster_models(results)
    if not clusters:
        return None
    out = []
    say = out.append
    placement = results["machine"].get("cluster_placement",
                                       "(placement not recorded)")
    say("## Clusters: K servers and Redis beside one server\n")
    say("Each cluster run starts a redis-server of its own (loopback, no "
        "persistence) and K servers of one model on one port "
        "(`--reuse-port --redis URL`); chat-load connects to that port and "
        "the kernel spreads the clients over the servers. The same N, "
        "workloads and checks as one server's runs, in the same sweep, "
        "run by run beside them. Placement: " + placement + "; one server "
        "runs alone on its CPU, as in every other run. CPU per delivery of "
        "a cluster is every server's CPU plus Redis's, over the same "
        "deliveries, in the throughput workload (closed loop: the servers "
        "always have work and batch it) and in the latency workload (open "
        "loop: each line alone, as a real chat); "
        "Redis's CPU per room line is per message said once "
        "and delivered to all N; EVALSHA and XREAD per room line are the "
        "servers' commands to Redis (Redis's INFO commandstats before and "
        "after the window), in the closed loop and (in brackets) the open "
        "loop. The servers' system calls per delivery (closed loop) show "
        "how many lines each write carries: one server batches every line "
        "waiting for a client into one write. "
        "*Where the cores' time went* is the throughput window, in "
        "cores (1 = one CPU all the time), from `/proc/stat` and each "
        "process's own CPU: *other* is every other process on the machine "
        "and kernel work charged to none.\n")
    rows = []
    for name, info in clusters.items():
        base = info["model"]
        for n in clients:
            one = summary.get((base, n))
            many = summary.get((name, n))
            if not one and not many:
                continue
            for label, s, own in ((f"one chat-{base}", one, False),
                                  (f"{info['servers']} × chat-{base} + Redis",
                                   many, True)):
                if not s:
                    continue
                ratio = open_ratio = "—"
                a = s.get("total_cpu_us_per_delivery")
                b = (one or {}).get("total_cpu_us_per_delivery")
                if own and a is not None and b:
                    ratio = times_text(a / b)
                a = s.get("open_loop_total_cpu_us_per_delivery")
                b = (one or {}).get("open_loop_total_cpu_us_per_delivery")
                if own and a is not None and b:
                    open_ratio = times_text(a / b)

                def calls(key):
                    closed = s.get(key)
                    opened = s.get("open_loop_" + key)
                    if closed is None and opened is None:
                        return "—"
                    return (f"{fmt_plain(closed)} "
                            f"({fmt_plain(opened)})")

                rows.append((
                    label, f"{n:,}", passed_text(s),
                    s.get("clients_per_server", "—") if own else f"{n:,}",
                    stalled_cell(s, fmt_count(s.get("deliveries_per_s"))),
                    stalled_cell(s, fmt_us(s.get(
                        "total_cpu_us_per_delivery"))),
                    ratio,
                    fmt_us(s.get("redis_cpu_us_per_delivery")) if own
                    else "—",
                    stalled_cell(s, fmt_plain(s.get(
                        "syscalls_per_delivery"))),
                    ("behind" if s.get("open_loop_behind_runs") and
                     s.get("open_loop_total_cpu_us_per_delivery") is None
                     else fmt_us(s.get(
                         "open_loop_total_cpu_us_per_delivery"))),
                    open_ratio,
                    fmt_us(s.get("redis_cpu_us_per_line")) if own else "—",
                    calls("evalsha_per_line") if own else "—",
                    calls("xread_per_line") if own else "—",
                    fmt_us(s.get("latency_p99_us")),
                    cores_text(_summary_cores(s), s.get("cores_by_cpu", {}))
                    if _summary_cores(s) else "—"))
    say(table(["Setup", "N", "Passed", "Clients per server",
               "Deliveries / s", "CPU / delivery (servers + Redis)",
               "× one server", "of which Redis",
               "Servers' system calls / delivery",
               "Open loop: CPU / delivery (servers + Redis)", "× one server",
               "Redis CPU / room line",
               "EVALSHA / room line", "XREAD / room line", "p99 latency",
               "Where the cores' time went"], rows))
    say("")
    arrivals = []
    for name in clusters:
        for n in clients:
            s = summary.get((name, n), {})
            if s.get("connect_evalsha_per_arrival") is not None:
                arrivals.append(
                    f"{name} at N = {n:,}: "
                    f"{fmt_plain(s['connect_evalsha_per_arrival'])} EVALSHA "
                    f"and {fmt_plain(s.get('connect_xread_per_arrival'))} "
                    f"XREAD per arrival")
    if arrivals:
        say("Connecting, per arrival (the name claimed, its arrival line "
            "read back by every server): " + "; ".join(arrivals) + ".\n")
    say("Deliveries per second of a cluster and of one server are "
        "measured on the same machine but not on the same CPUs' budget "
        "unless the placement above says so: with the load generator on "
        "the same two cores, no figure here is a scaling claim.\n")
    say("**Goals** (issue 14; measured, never asserted by a test):\n")
    say(table(["Goal", "Measured", "Verdict"],
              cluster_goal_rows(clusters, clients, summary)))
    say("")
    return "\n".join(out)


def other_work_text(runs):
    """How much of the machine other work took in the throughput windows,
    from /proc/stat: what else was loaded while the sweep measured."""
    other = [r["figures"]["cores_other"] for r in runs
             if r["status"] == "ok" and
             r["figures"].get("cores_other") is not None]
    if not other:
        return ""
    cpus = max(len((r["figures"].get("cores") or {}).get("by_cpu", {}))
               for r in runs if r["status"] == "ok" and
               r["figures"].get("cores"))
    return (f"Other work on the machine (every process but the servers, "
            f"Redis, chat-load and the sweep, from /proc/stat) took "
            f"{fmt_plain(statistics.median(other), 2)} of the {cpus} CPUs in "
            f"the throughput windows (median; max "
            f"{fmt_plain(max(other), 2)}).\n")


def build(folder):
    """Writes runs.csv, summary.csv, charts/ and report.md; returns the
    report's path."""
    with open(os.path.join(folder, "runs.json")) as f:
        results = json.load(f)
    runs = results["runs"]
    derive_all(results)
    models = [m["name"] for m in results["models"]]
    clients = results["config"]["clients"]
    summary = median_figures(runs)

    with open(os.path.join(folder, "runs.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "clients", "repeat", "status"] + CSV_FIGURES
                        + ["error"])
        for run in runs:
            writer.writerow([run["model"], run["clients"], run["repeat"],
                             run["status"]] +
                            [run["figures"].get(k, "") for k in CSV_FIGURES] +
                            [run.get("error") or ""])
    with open(os.path.join(folder, "summary.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "clients", "runs", "passed"] + CSV_FIGURES)
        for model in models:
            for n in clients:
                s = summary.get((model, n))
                if s:
                    writer.writerow([model, n, s["runs"], s["passed"]] +
                                    [s.get(k, "") for k in CSV_FIGURES])

    machine = results["machine"]
    subtitle = (f"{machine['host']}, {machine['date'][:10]}, "
                f"{results['config']['mode']} sweep, medians")
    charts, chart_note = write_charts(folder, models, clients, summary,
                                      subtitle)
    text = render_markdown(results, models, clients, summary, runs, charts,
                           chart_note)
    path = os.path.join(folder, "report.md")
    with open(path, "w") as f:
        f.write(text)
    return path


def render_markdown(results, models, clients, summary, runs, charts,
                    chart_note):
    machine = results["machine"]
    config = results["config"]
    biggest = max(clients)
    out = []
    say = out.append

    say(f"# C10K chat benchmark: {machine['host']}, {machine['date']}\n")
    say(f"A **{config['mode']}** sweep of {', '.join(models)} over "
        f"N = {', '.join(f'{n:,}' for n in clients)} concurrent connections, "
        f"{config['repeats']} run(s) each, measured by `bench/sweep.py` with "
        f"`chat-load` on {machine['cpu']} ({machine['cpus_online']} CPUs, "
        f"{fmt_bytes(machine['memory_bytes'])}), Linux {machine['kernel']}. "
        f"{machine['pinning'][:1].upper() + machine['pinning'][1:]}. "
        f"Load average before the sweep: "
        f"{' '.join(machine['load_average'])}, after: "
        f"{' '.join(machine.get('load_average_end', ['?']))} (it counts "
        f"the sweep's own thousands of tasks too, long after they are gone; "
        f"the line below measures the noise that matters).\n")
    waits = [r["figures"].get("server_wait_share") for r in runs
             if r["status"] == "ok" and r["figures"].get("tasks") == 1 and
             r["figures"].get("server_wait_share") is not None]
    load_waits = [r["figures"].get("loadgen_wait_share") for r in runs
                  if r["status"] == "ok" and
                  r["figures"].get("loadgen_wait_share") is not None]
    if waits and load_waits:
        say(f"Noise from other work: in the throughput windows the "
            f"single-task servers were ready to run but waiting for a CPU "
            f"{fmt_share(statistics.median(waits))} of the time (median; "
            f"max {fmt_share(max(waits))}), and chat-load "
            f"{fmt_share(statistics.median(load_waits))}. Near 0 % on a quiet "
            f"machine; above a few percent, throughput and latency figures "
            f"are lower bounds of what the machine can do.\n")
    other = other_work_text(runs)
    if other:
        say(other)
    if results.get("interrupted"):
        say("**This sweep was interrupted**: the figures cover the runs that "
            "finished.\n")
    for extra in results.get("appended", []):
        at = ", ".join(f"{n:,}" for n in extra.get("clients", []))
        say(f"Runs of {', '.join(extra['models'])}"
            + (f" at N = {at}" if at else "") + " were added later"
            + (", to finish the interrupted sweep"
               if extra.get("continued_interrupted_sweep") else "")
            + f" ({extra['date']}, {extra['repeats']} run(s) per N, load "
            f"average {' '.join(extra['load_average'])}).\n")

    # The talk's table.
    say(f"## The C10K table, measured at N = {biggest:,}\n")
    say("The talk's table (Process / Thread / Async, who uses each) with "
        f"this machine's figures at {biggest:,} concurrent connections: "
        "medians of the runs that passed every check.\n")
    clusters = cluster_models(results)
    plain = [m for m in models if m not in clusters]
    say(c10k_table(plain, biggest, summary))
    say("")
    notes = stalled_notes(models, [biggest], summary)
    if notes:
        say(f"**Stalled** means the throughput window held too little to "
            f"measure (fewer than {config.get('min_fanouts', MIN_FANOUTS)} "
            f"messages sent inside it, or a drain after it longer than the "
            f"window itself) "
            + (f"even after chat-load extended it (up to "
               f"{config['max_window']:g} s)" if "max_window" in config else
               "(this sweep's chat-load did not yet extend a short window)")
            + ": such a window is reported with what was seen, never as a "
            "rate.\n")
        say("\n".join(notes) + "\n")
    say("User memory is the server tree's PSS growth per idle connection, "
        "read once every client has registered and the room has been idle "
        "for 2 s (the figure right after the registration storm is in "
        "runs.json as memory_after_storm). "
        "Kernel memory is the server's own kernel stacks (one per task) and "
        "page tables, plus the growth of the system's Slab (socket "
        "structures), which includes the load generator's end of each "
        "loopback connection (the same for every model) and any other work "
        "on the machine. CPU per delivery "
        f"and deliveries per second come from the throughput workload "
        f"({config['senders']} senders, {config['window']} messages in flight "
        "each); p99 latency from the open-loop latency workload at "
        f"{config['latency_deliveries']:g} deliveries per second in total. "
        "System calls and context switches per delivery are the server "
        "tree's own (every thread and child process) in the throughput "
        f"window; system calls counted by "
        f"{syscall_method_text(results, summary)}.\n")

    say(what_the_numbers_say(plain, biggest, summary))
    section = cluster_section(results, clients, summary)
    if section:
        say(section)

    say("## Open loop and closed loop: what a delivery costs\n")
    points = sorted({n for n in (1000, biggest) if n in clients})
    say("The throughput workload is a closed loop (each sender keeps "
        f"{config['window']} messages in flight, so the server always has "
        "work and batches it); the latency workload is an open loop (a fixed "
        "schedule of R messages per second, the same "
        f"{config['latency_deliveries']:g} deliveries per second at every "
        "N), where a server meets each message alone, as a real chat does. "
        "The cost per delivery in each, at "
        + " and ".join(f"N = {n:,}" for n in points) + ":\n")
    say(open_loop_table(models, points, summary))
    say("")
    behind = [f"{m} at N = {n:,} ({summary[(m, n)]['open_loop_behind']})"
              for n in points for m in models
              if summary.get((m, n), {}).get("open_loop_behind_runs")]
    if behind:
        say("*Behind*: the server ended the open-loop window more than a "
            "window behind its schedule, so the window measured it catching "
            "up, not serving the schedule: " + "; ".join(behind) + ".\n")
    breakdown = syscall_breakdown(models, points, summary, clients)
    if breakdown:
        say("System calls per delivery by call (counted one by one where "
            "the server has few enough tasks for a counter per call and "
            "task; *other* is the rest of the total):\n")
        say(breakdown)
        say("")

    say("## What this machine charges for a switch and a page fault\n")
    say("\n".join(machine_cost_lines(machine, summary, models, biggest))
        + "\n")

    say("## Heap policy\n")
    say("How each model's heap gives freed memory back (common/os/heap.h); "
        "it moves the memory and CPU figures, so it is stated per model, as "
        "the sweep read it from the checkout's sources when it ran:\n")
    say("\n".join(heap_policy_lines(results, models)) + "\n")

    # Where each model broke.
    say("## Where each model broke, and why\n")
    for model in models:
        failures = [r for r in runs if r["model"] == model and
                    r["status"] not in ("ok",)]
        ran = sorted({r["clients"] for r in runs if r["model"] == model})
        if not ran:
            say(f"- **{model}** was not run (the sweep was stopped before).")
            continue
        if not failures:
            missing = [n for n in clients if n not in ran]
            say(f"- **{model}** completed every N it ran "
                f"({', '.join(f'{n:,}' for n in ran) or 'none'}) in every run"
                + (f"; not run at {', '.join(f'{n:,}' for n in missing)} "
                   f"(the sweep was stopped)." if missing else "."))
            say_shutdowns(say, runs, model)
            continue
        first = min(r["clients"] for r in failures)
        say(f"- **{model}** first failed at N = {first:,}:")
        say_shutdowns(say, runs, model)
        for r in failures:
            error = (r.get("error") or "").replace("\n", " ")
            if r["status"] == "skipped":
                say(f"  - N = {r['clients']:,} run {r['repeat']}: {error}")
            else:
                say(f"  - N = {r['clients']:,} run {r['repeat']}: "
                    f"`{error[:400]}`. Likely cause: {likely_cause(error)}.")
    say("")

    say("## Targets\n")
    say("Measured by this sweep and quoted as medians (never as timed "
        "tests).\n")
    say(table(["Target", "Measured", "Verdict"],
              evaluate_targets(models, clients, summary, runs) +
              cluster_goal_rows(clusters, clients, summary)))
    say("")

    say("## Charts\n")
    if chart_note:
        say(chart_note + "\n")
    for name, title, notes in charts:
        say(f"### {title}\n")
        say(f"![{title}](charts/{name}.png)\n")
        for note in notes:
            say(note + "\n")
        say(f"[SVG](charts/{name}.svg) · [data](charts/{name}.dat) · "
            f"[gnuplot script](charts/{name}.gp)\n")

    say("## Every figure, per model and N\n")
    say("Medians of the passed runs (min–max in runs.csv); a dash where no "
        "run passed.\n")
    rows = []
    for model in models:
        for n in clients:
            s = summary.get((model, n))
            if not s:
                continue
            rows.append((model, f"{n:,}", passed_text(s),
                         fmt_bytes(s.get("user_bytes_per_conn")),
                         fmt_bytes(s.get("kernel_stack_per_conn")),
                         fmt_bytes(s.get("page_tables_per_conn")),
                         fmt_bytes(s.get("slab_per_conn")),
                         fmt_count(s.get("tasks")),
                         fmt_seconds(s.get("connect_seconds")),
                         fmt_us(s.get("connect_p99_us")),
                         stalled_cell(s, fmt_count(s.get(
                             "deliveries_per_s"))),
                         stalled_cell(s, fmt_plain(s.get(
                             "cpu_us_per_delivery"))),
                         stalled_cell(s, fmt_plain(s.get(
                             "syscalls_per_delivery"))),
                         stalled_cell(s, fmt_plain(s.get(
                             "switches_per_delivery"))),
                         fmt_plain(s.get("faults_per_delivery")),
                         fmt_seconds(s.get("window_seconds")),
                         fmt_share(s.get("server_cpu_share")),
                         fmt_share(s.get("server_wait_share")),
                         fmt_share(s.get("loadgen_cpu_share"))))
    say("**Memory, connect and throughput**\n")
    say(table(["Model", "N", "Passed", "User mem/conn", "Kernel stacks/conn",
               "PageTables/conn", "Slab/conn", "Tasks", "Connect all",
               "Connect p99", "Deliveries/s", "CPU µs/delivery",
               "Syscalls/delivery", "Switches/delivery", "Faults/delivery",
               "Window", "Server CPU", "Server waited",
               "chat-load CPU"], rows))
    say("")
    notes = stalled_notes(models, clients, summary)
    if notes:
        say("Stalled throughput windows (no rate is given from them):\n")
        say("\n".join(notes) + "\n")
    rows = []
    for model in models:
        for n in clients:
            s = summary.get((model, n))
            if not s:
                continue
            rows.append((model, f"{n:,}",
                         fmt_plain(s.get("latency_rate_per_s")),
                         fmt_us(s.get("latency_p50_us")),
                         fmt_us(s.get("latency_p90_us")),
                         fmt_us(s.get("latency_p99_us")),
                         fmt_us(s.get("latency_p999_us")),
                         fmt_us(s.get("latency_max_us")),
                         fmt_us(s.get("latency_send_lag_p99_us")),
                         ("behind" if s.get("open_loop_behind_runs") and
                          s.get("open_loop_cpu_us_per_delivery") is None
                          else fmt_plain(s.get(
                              "open_loop_cpu_us_per_delivery"))),
                         fmt_plain(s.get("open_loop_syscalls_per_delivery")),
                         fmt_plain(s.get("open_loop_switches_per_delivery")),
                         fmt_share(s.get("latency_server_cpu_share")),
                         fmt_share(s.get("latency_server_wait_share")),
                         fmt_share(s.get("latency_loadgen_cpu_share"))))
    say("**Latency** (open loop: R messages per second spread over the "
        "senders, every receiver measures now − scheduled send time)\n")
    say(table(["Model", "N", "R msg/s", "p50", "p90", "p99", "p99.9", "max",
               "chat-load send lag p99", "CPU µs/delivery",
               "Syscalls/delivery", "Switches/delivery", "Server CPU",
               "Server waited", "chat-load CPU"],
              rows))
    say("")

    say("## How it was measured\n")
    say("See `bench/README.md` for the method and units. In short: each "
        "server runs alone on its CPU with `-H 127.0.0.1 -p 0 "
        f"--max-clients N+64 --max-backlog {config['max_backlog']} "
        "--login-timeout 0`; chat-load (one epoll thread, `TCP_NODELAY`) "
        "connects and registers N clients and waits until each has seen its "
        "own and every later arrival, the sweep samples the server's whole "
        "process tree from /proc, then chat-load runs the throughput and "
        f"latency workloads ({config['warmup']:g} s warm-up, "
        f"{config['duration']:g} s measured window each"
        + (f"; a throughput window goes on, up to {config['max_window']:g} s, "
           f"until it holds {config.get('min_fanouts', MIN_FANOUTS)} "
           f"messages sent inside it and lasts twice the time its in-flight "
           f"messages took to reach everyone" if "max_window" in config
           else "")
        + ") while every "
        "receiver checks every line for missing, duplicated or out-of-order "
        "deliveries. A run with any such error is marked failed and left out "
        "of the medians.\n")
    if results.get("limit_notes"):
        say("Limits the sweep raised or could not raise:\n")
        for note in results["limit_notes"]:
            say(f"- {note}")
        say("")

    say("## Machine\n")
    limits = machine["limits"]
    facts = [
        ("Date (UTC)", machine["date"]),
        ("Host", machine["host"]),
        ("OS", machine.get("os")),
        ("Kernel", f"{machine['kernel']} ({machine['kernel_version']})"),
        ("CPU", f"{machine['cpu']}, {machine['cpus_online']} online, "
                f"usable {machine['cpus_usable']}"),
        ("Memory", fmt_bytes(machine["memory_bytes"])),
        ("Pinning", machine["pinning"]),
        ("Compiler", machine.get("compiler")),
        ("libevent", machine.get("libevent")),
        ("Python", machine.get("python")),
        ("gnuplot", machine.get("gnuplot")),
        ("Commit", f"{machine.get('git_commit')}"
                   f"{' (with uncommitted changes)' if machine.get('git_dirty') else ''}"),
        ("ulimit -n (soft/hard)", f"{limits['RLIMIT_NOFILE']['soft']}/"
                                  f"{limits['RLIMIT_NOFILE']['hard']}"),
        ("ulimit -u (soft/hard)", f"{limits['RLIMIT_NPROC']['soft']}/"
                                  f"{limits['RLIMIT_NPROC']['hard']}"),
        ("ulimit -s (soft)", limits["RLIMIT_STACK"]["soft"]),
    ] + [(k, v) for k, v in limits["sysctl"].items()]
    say(table(["", ""], [(k, f"`{v}`") for k, v in facts]))
    say("")
    say(f"Sweep options: `{json.dumps({k: v for k, v in config.items() if k != 'latency_rates'})}`; "
        f"latency rates (messages/s by N): `{json.dumps(config.get('latency_rates'))}`. "
        f"The sweep took {results.get('seconds', 0):.0f} s.\n")
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help") or len(args) not in (1, 3) \
            or (len(args) == 3 and args[1] != "--readme"):
        print("usage: report.py RESULTS_FOLDER [--readme README.md]\n"
              "  rewrites the folder's CSV, charts and report.md from its "
              "runs.json;\n  with --readme, also the README's reference "
              "section (between its markers)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    print(build(args[0]))
    if len(args) == 3:
        update_readme(args[0], args[2])
        print(args[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
