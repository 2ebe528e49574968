#!/usr/bin/env python3
"""chat-forking: a child stopped (SIGSTOP) while it holds the room lock.

Usage:
    python3 stopped_lock_holder.py SERVER [--signals TERM,HUP] [--redis]

For each stop signal, on a fresh server: clients chat without pause, one of
them floods the room (900-byte lines and NAMES); the child serving the
flooder is stopped again and again until it is caught holding the room lock
(the owner's thread id in the mutex word, read through /proc/PID/mem, as
kill_child.py does), and left stopped. The room is then frozen: no line can
be published until that child goes on. Then another chatter's child is
killed with SIGKILL, so that the parent has a dead child's user to make
depart, which needs the lock.

Checked: the parent still serves while the lock is held (it reaps the
killed child, and a newcomer is welcomed); the stop signal (SIGTERM, then
SIGHUP, which docs/PROTOCOL.md makes a graceful stop too) ends the server with
status 0 within 2 seconds, and every client still connected, the stopped
child's own client and a newcomer that never gave a name included, gets
`Server shutting down` as its last line before the end of the stream; no
process of the server outlives it and its stderr holds no sanitizer
report.

With --redis the server shares its room through a redis-server of the
test's own (exit 77 without one): the flooder's child is caught holding the
lock while it lists the names, and the parent, the room's only writer, must
go on serving without it: the killed child's user departs (through Redis)
and the others' lines wait for the lock.

Environment: CONFORMANCE_TIME_FACTOR (default 1) stretches every deadline.
Standard library only; Linux (/proc). Uses kill_child.py's clients and
/proc readers.
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from kill_child import (DEADLINE, TIME_FACTOR, Client, Readers,  # noqa: E402
                        Sender, child_serving, die_with_parent, fail,
                        lock_owner, lock_word_address, process_state,
                        register, start_redis, stop_redis)
from server_process import sanitizer_report  # noqa: E402

GOODBYE = b"Server shutting down"


def wait_until(condition, what, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            fail(f"{what} within {timeout:.0f} s")
        time.sleep(0.001)


def stopped(pid):
    try:
        return process_state(pid) in ("T", "t")
    except OSError:
        return False


def gone(pid):
    """True once pid is reaped (no zombie left)."""
    return not os.path.exists(f"/proc/{pid}")


def stop_holding_lock(server_pid, address, pid, attempts):
    """Stops pid until it is caught holding the room lock; leaves it
    stopped then. Returns the number of attempts it took."""
    for attempt in range(1, attempts + 1):
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: stopped(pid), f"process {pid} did not stop")
        if lock_owner(server_pid, address) == pid:
            return attempt
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.uniform(0, 0.003))
    fail(f"process {pid} never caught holding the lock in {attempts} tries")


def run(server_path, signum, attempts, cluster):
    names_every = 1 if cluster else 10
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [server_path, "-p", "0", "-H", "127.0.0.1",
         "--max-backlog", str(64 << 20)] + cluster,
        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        preexec_fn=die_with_parent)
    senders = []
    try:
        first = server.stdout.readline().decode()
        match = re.search(r"running on port (\d+)", first)
        if not match:
            fail(f"no startup line: {first!r}")
        port = int(match.group(1))
        address = lock_word_address(server.pid)
        if address is None:
            fail("cannot find the shared mapping")

        readers = Readers()
        watcher = register(port, readers, "watcher")
        chatters = [register(port, readers, f"c{i}") for i in range(4)]
        flooder = register(port, readers, "flooder")
        # With --redis a child holds the lock only to list the names: a
        # longer list holds it longer, and the flooder is caught sooner.
        idle = [register(port, readers, f"idle{i}")
                for i in range(100 if cluster else 0)]
        unnamed = Client(port, "unnamed")
        readers.add(unnamed)
        unnamed.wait_for(b"Welcome to ChatServer")
        senders = [
            Sender(chatters, 5, 0.005,
                   lambda c, i: b"%s says %d\r\n" % (c.name.encode(), i)),
            # With --redis a child holds the lock only for NAMES.
            Sender([flooder], 20, 0.001,
                   lambda c, i: (b"NAMES\r\n" if i % names_every == 0 else
                                 b"%d %s\r\n" % (i, b"x" * 900))),
        ]
        for sender in senders:
            sender.start()

        holder = child_serving(server.pid, port, flooder)
        tries = stop_holding_lock(server.pid, address, holder, attempts)
        for sender in senders:
            sender.stop.set()
            sender.join()

        # A child dies while the lock is held: the parent reaps it, and must
        # not wait for the lock to make its user depart.
        victim = chatters.pop()
        victim_pid = child_serving(server.pid, port, victim)
        os.kill(victim_pid, signal.SIGKILL)
        wait_until(lambda: gone(victim_pid),
                   f"the killed child {victim_pid} was not reaped")
        readers.remove(victim)
        victim.sock.close()
        newcomer = Client(port, "newcomer")
        readers.add(newcomer)
        newcomer.wait_for(b"Welcome to ChatServer")  # the parent still serves
        if not stopped(holder):
            fail(f"the lock holder {holder} is no longer stopped")

        started = time.monotonic()
        server.send_signal(signum)
        try:
            status = server.wait(timeout=2 * TIME_FACTOR)
        except subprocess.TimeoutExpired:
            fail(f"the server did not exit within {2 * TIME_FACTOR:.0f} s of "
                 f"{signal.Signals(signum).name} with a stopped lock holder")
        took = time.monotonic() - started
        if status != 0:
            fail(f"exit status {status} after {signal.Signals(signum).name}")

        everyone = [watcher, flooder, unnamed, newcomer] + chatters + idle
        for client in everyone:
            wait_until(lambda: client.closed,
                       f"{client.name}: the connection was not closed")
            with client.changed:
                last = client.lines[-1:] or [b""]
            if last[0] != GOODBYE:
                fail(f"{client.name}: last line {last[0][:60]!r}, expected "
                     f"{GOODBYE!r}")
        readers.stopping = True
        for client in everyone:
            client.sock.close()

        try:
            os.killpg(server.pid, 0)
            fail("processes of the server's group outlived it")
        except ProcessLookupError:
            pass
        log.seek(0)
        report = sanitizer_report(log.read().decode(errors="replace"))
        if report:
            fail("sanitizer report:\n" + report)
        print(f"stopped_lock_holder: {signal.Signals(signum).name}: the lock "
              f"holder caught after {tries} tries; the parent still served; "
              f"stopped in {took * 1000:.0f} ms with {len(everyone)} clients "
              f"told; ok", flush=True)
    finally:
        for sender in senders:
            sender.stop.set()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--signals", default="TERM,HUP")
    parser.add_argument("--attempts", type=int, default=None,
                        help="tries to catch the flooder holding the lock "
                             "(3000; 10000 with --redis, where it holds the "
                             "lock only for NAMES)")
    parser.add_argument("--redis", action="store_true",
                        help="share the room through a redis-server")
    args = parser.parse_args()
    if args.attempts is None:
        args.attempts = 10000 if args.redis else 3000
    signal.signal(signal.SIGTERM,
                  lambda *_: sys.exit("stopped_lock_holder: stopped"))
    for name in args.signals.split(","):
        redis, cluster = None, []
        if args.redis:
            redis, url = start_redis()
            cluster = ["--redis", url]
        try:
            run(args.server, signal.Signals["SIG" + name.strip()],
                args.attempts, cluster)
        finally:
            stop_redis(redis)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"stopped_lock_holder: FAILED: {error}", file=sys.stderr)
        sys.exit(1)
