#!/usr/bin/env python3
"""The figures of forking/README.md: what N connections cost chat-forking.

Usage:
    python3 measure.py SERVER [--clients N] [--load build/bin/chat-load]

It starts the server, samples it idle, then runs chat-load (bench/), which
connects and registers N clients. Once every client has seen every arrival
(chat-load's "connected" mark) it samples again: processes, summed PSS and
RSS over the server's process tree, one child's own figures, and the
kernel's counters (bench/procstat.py). Then one client sends a message a
second for a few seconds, and chat-load reports how long each took to reach
every client (its latency workload: max = the slowest of the N). Last, it
stops the server with SIGTERM and times the exit. Any other model's binary
works too, for comparison.

Standard library only; Linux (/proc).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench"))
import procstat  # noqa: E402

MIB = 1 << 20


def rollup(pid):
    """A process's smaps_rollup, in bytes."""
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                figures[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return figures


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--load", default=os.path.join(REPO, "build", "bin",
                                                       "chat-load"))
    parser.add_argument("--messages", type=int, default=5,
                        help="broadcasts, one a second")
    args = parser.parse_args()

    server = subprocess.Popen([args.server, "-p", "0", "-q"],
                              stdout=subprocess.PIPE, start_new_session=True)
    load = None
    try:
        port = int(re.search(rb"port (\d+)", server.stdout.readline()).group(1))
        time.sleep(0.5)
        idle = procstat.memory_sample(server.pid)
        load = subprocess.Popen(
            [args.load, "--control", "-q", "-p", str(port),
             "-n", str(args.clients), "-w", "latency", "-s", "1",
             "-r", "1", "-d", str(args.messages), "--warmup", "1",
             "--connect-timeout", str(60 + args.clients / 20)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        loaded, child, result, ramp = None, None, None, time.monotonic()
        for line in load.stdout:
            if line.startswith("@mark"):
                if "connected" in line:
                    ramp = time.monotonic() - ramp
                    loaded = procstat.memory_sample(server.pid)
                    children = children_of(server.pid)
                    samples = [rollup(pid) for pid in children[::max(
                        1, len(children) // 50)]]
                    child = {key: statistics.median(s.get(key, 0)
                                                    for s in samples)
                             for key in ("Rss", "Pss", "Private_Dirty",
                                         "Private_Clean", "Shared_Clean",
                                         "Shared_Dirty")} if samples else {}
                load.stdin.write("go\n")
                load.stdin.flush()
            elif line.startswith("@result"):
                result = json.loads(line[len("@result"):])
                load.stdin.close()
                break
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=10)
        stopped = time.monotonic() - started
        load.wait(timeout=30)
    finally:
        for process in (server, load):
            if process and process.poll() is None:
                os.killpg(server.pid, signal.SIGKILL) if process is server \
                    else process.kill()
                process.wait()
    try:
        os.killpg(server.pid, 0)
        leftovers = "processes of the server's group outlived it"
    except ProcessLookupError:
        leftovers = "none"

    if not loaded or not result:
        sys.exit(f"measure: no result: {result}")
    n = args.clients
    kernel = {key: loaded["kernel"].get(key, 0) - idle["kernel"].get(key, 0)
              for key in loaded["kernel"]}
    latency = result["latency"]["latency_us"]
    print(f"clients                {n} (registered in {ramp:.1f} s, "
          f"checks {'ok' if result['ok'] else 'FAILED'})")
    print(f"processes              {loaded['processes']}")
    print(f"summed PSS             {loaded['pss'] / MIB:.1f} MiB "
          f"(idle server {idle['pss'] / MIB:.1f} MiB)")
    print(f"summed RSS             {loaded['rss'] / MIB:.1f} MiB "
          f"(idle server {idle['rss'] / MIB:.1f} MiB)")
    print(f"user space per client  {(loaded['pss'] - idle['pss']) / n / 1024:.1f} "
          f"KiB of PSS")
    if child:
        print("one child (median)     " + ", ".join(
            f"{key} {value / 1024:.0f} KiB" for key, value in child.items()))
    print("kernel, per client     " + ", ".join(
        f"{key} {kernel[key] / n / 1024:.1f} KiB"
        for key in ("KernelStack", "PageTables", "Slab") if key in kernel) +
        f" (both ends of {n} loopback connections)")
    print(f"broadcast to all       p50 {latency['p50'] / 1000:.1f} ms, "
          f"max {latency['max'] / 1000:.1f} ms over "
          f"{result['latency']['messages']} messages")
    print(f"SIGTERM to exit        {stopped * 1000:.0f} ms, status {status}, "
          f"left behind: {leftovers}")


if __name__ == "__main__":
    main()
