#!/usr/bin/env python3
"""The figures of evented/README.md: one server, one chat-load run, and the
server's cost over chat-load's measured window.

  measure.py [--load CHAT_LOAD] [--runs R] WORKLOAD N LABEL=SERVER ...

WORKLOAD is latency (open loop: --rate messages per second in all, on a
fixed schedule), throughput (closed loop: 10 senders, 8 messages in flight
each) or connect (memory only). The servers run in turn, R rounds, so that
a before and an after meet the same machine; the server is pinned to CPU 1
and chat-load to CPU 0. For each run, one JSON line:

  cpu_us_per_delivery     server CPU in the window (schedstat) / deliveries
  syscalls_per_delivery   system calls (perf stat on the raw_syscalls and
                          syscalls tracepoints; needs perf and the right to
                          trace) / deliveries, with the main ones by name
  switches_per_delivery   context switches (voluntary + involuntary)
  user_bytes_per_conn     growth of the server's PSS from idle to N idle
                          registered connections, read two seconds after
                          the last registration (as bench/sweep.py does)

then the medians per label. Not a test: the machine's other work shows in
every figure; compare runs of one invocation, and medians.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))
import procstat  # noqa: E402

CALLS = ("sendto", "writev", "write", "epoll_ctl", "epoll_wait", "recvfrom",
         "readv", "ioctl")


def start_perf(pid):
    events = ["duration_time", "raw_syscalls:sys_enter"] + [
        f"syscalls:sys_enter_{name}" for name in CALLS]
    return subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(events),
                             "-p", str(pid)], stderr=subprocess.PIPE)


def stop_perf(perf):
    perf.send_signal(signal.SIGINT)
    _, err = perf.communicate(timeout=30)
    counts = {}
    for line in err.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 3 and fields[0].isdigit():
            event = fields[2]
            name = event.split("sys_enter_")[-1] if "sys_enter_" in event \
                else event.split(":")[0]  # raw_syscalls, duration_time
            counts[name] = int(fields[0])
    return counts


def one_run(server_binary, load_binary, workload, clients, rate, duration):
    server = subprocess.Popen(
        ["taskset", "-c", "1", server_binary, "-H", "127.0.0.1", "-p", "0",
         "--max-clients", str(clients + 64), "--max-backlog", str(64 << 20),
         "--login-timeout", "0", "-q"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    port = int(server.stdout.readline().split()[-1])
    time.sleep(0.3)
    idle = procstat.memory_sample(server.pid)
    load = subprocess.Popen(
        ["taskset", "-c", "0", load_binary, "--control", "-q", "-p",
         str(port), "-n", str(clients), "-w", workload, "-r", str(rate),
         "-d", str(duration), "--warmup", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, perf, result, pending = {}, None, None, b""
    while result is None:
        chunk = os.read(load.stdout.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            text = raw.decode()
            if text.startswith("@mark "):
                name = text[6:].strip()
                if name == "connected":
                    time.sleep(2.0)
                    memory = procstat.memory_sample(server.pid)
                    out["user_bytes_per_conn"] = \
                        (memory["pss"] - idle["pss"]) / clients
                elif name.endswith("-start"):
                    perf = start_perf(server.pid)
                    perf_started = time.monotonic()
                    time.sleep(0.1)  # perf attaches
                    cpu_start = procstat.cpu_sample(server.pid)
                elif name.endswith("-end"):
                    cpu = procstat.cpu_delta(cpu_start,
                                             procstat.cpu_sample(server.pid))
                    perf_wall = time.monotonic() - perf_started
                    counts = stop_perf(perf)
                load.stdin.write(b"go\n")
                load.stdin.flush()
            elif text.startswith("@result "):
                result = json.loads(text[8:])
    load.stdin.close()
    load.wait()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    out["ok"] = bool(result and result["ok"])
    if workload != "connect" and result:
        window = result[workload]
        deliveries = window["deliveries"]
        per_s = deliveries / window["seconds"]
        # perf counted over its own span, a little wider than the window:
        # compare rates. (duration_time is summed over a process's threads.)
        span = min(counts.pop("duration_time", 0) / 1e9 or perf_wall,
                   perf_wall)
        out.update({
            "deliveries_per_s": round(per_s),
            "cpu_us_per_delivery": cpu["cpu_s"] * 1e6 / deliveries,
            "switches_per_delivery": (cpu["voluntary_switches"] +
                                      cpu["involuntary_switches"]) /
                                     deliveries,
            "syscalls_per_delivery": counts.get("raw_syscalls", 0) / span /
                                     per_s,
            "by_call": {name: round(counts.get(name, 0) / span / per_s, 4)
                        for name in CALLS},
            "cpu_wait_s": cpu["wait_s"],
        })
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["latency", "throughput",
                                             "connect"])
    parser.add_argument("clients", type=int)
    parser.add_argument("servers", nargs="+", metavar="LABEL=SERVER")
    parser.add_argument("--load", default=os.path.join(
        REPO, "build", "bin", "chat-load"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--duration", type=float, default=5)
    options = parser.parse_args()
    runs = {}
    for round_number in range(options.runs):
        for spec in options.servers:
            label, binary = spec.split("=", 1)
            run = one_run(binary, options.load, options.workload,
                          options.clients, options.rate, options.duration)
            runs.setdefault(label, []).append(run)
            print(json.dumps({"label": label, "round": round_number + 1,
                              **run}), flush=True)
    for label, results in runs.items():
        medians = {key: statistics.median(r[key] for r in results)
                   for key in ("cpu_us_per_delivery", "syscalls_per_delivery",
                               "switches_per_delivery", "user_bytes_per_conn")
                   if all(key in r for r in results)}
        print(json.dumps({"label": label, "median_of": len(results),
                          **medians}))


if __name__ == "__main__":
    main()
