#!/usr/bin/env python3
"""chat-forking: SIGKILL a child in the middle of heavy chatting, many times.

Usage:
    python3 kill_child.py SERVER [--rounds N] [--chatters N] [--redis]

Several clients chat without pause while, round after round, a victim joins,
chats as fast as it can (long lines, NAMES), and the child process serving
it is killed with SIGKILL. The child is found through /proc: the one that
holds the server's end of the victim's socket. Every other round it dies
wherever it happens to be; in the others the test first catches it holding
the room lock: it stops it (SIGSTOP), reads the lock word in the shared
mapping (glibc keeps the owner's thread id there), and kills it only if the
owner is the child itself; otherwise it lets it run on and tries again, up
to a limit, then kills it wherever it is.

One round in five, the victim is killed instead a moment after it sent its
name: before, during or after its join.

Checked, every round: a marker line sent after the kill reaches every other
client within a deadline (nobody stalls), and `User vN departed.` arrives.
At the end: every client saw each victim arrive once and depart exactly
once, after its arrival (or, killed while joining, neither, and all agree); NAMES lists exactly the survivors; the server has
one child per live connection and no zombie; at least one child was killed
holding the lock, and the server logged a repair for each of those; SIGTERM
stops it with status 0 within 2 seconds, with no child left and no
sanitizer report.

With --redis the server shares its room through a redis-server of the
test's own (on a free loopback port, no persistence; exit 77, CTest's skip,
without one): the parent owns the link and is the room's only writer, and a
child holds the lock only to list the names, so the victims are caught
holding it during their NAMES; the rest is checked the same way.

Environment: CONFORMANCE_TIME_FACTOR (default 1) stretches every deadline.
Standard library only; Linux (/proc).
"""

import argparse
import ctypes
import os
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from server_process import children, sanitizer_report  # noqa: E402

TIME_FACTOR = float(os.environ.get("CONFORMANCE_TIME_FACTOR") or 1)
DEADLINE = 5.0 * TIME_FACTOR  # seconds for anything to arrive
PROMPT = b"Enter user name: "
FUTEX_TID_MASK = 0x3FFFFFFF  # the owner's thread id in a robust mutex word
PR_SET_PDEATHSIG = 1


def fail(message):
    raise AssertionError(message)


class Client:
    """One chat connection; a shared reader thread fills `lines`."""

    def __init__(self, port, name):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.lines = []
        self.closed = False
        self.changed = threading.Condition()

    def feed(self, data):
        with self.changed:
            if not data:
                self.closed = True
            self.buffer += data
            *complete, self.buffer = self.buffer.split(b"\r\n")
            # The prompt has no line end: it prefixes the next line.
            self.lines.extend(line.replace(PROMPT, b"") for line in complete)
            self.changed.notify_all()

    def wait_for(self, line, start=0):
        """Index of the first `line` at or after `start`; fails at the deadline."""
        deadline = time.monotonic() + DEADLINE
        with self.changed:
            while True:
                try:
                    return self.lines.index(line, start)
                except ValueError:
                    pass
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    fail(f"{self.name}: {line!r} did not arrive within "
                         f"{DEADLINE:.0f} s; last lines: {self.lines[-5:]}")
                self.changed.wait(left)

    def count(self, line):
        with self.changed:
            return self.lines.count(line)

    def send(self, data):
        self.sock.sendall(data)


class Readers:
    """One thread reads every client's socket, so nobody falls behind."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def add(self, client):
        with self.lock:
            self.selector.register(client.sock, selectors.EVENT_READ, client)

    def remove(self, client):
        with self.lock:
            try:
                self.selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass

    def run(self):
        while not self.stopping:
            with self.lock:
                ready = self.selector.select(timeout=0.01)
                for key, _ in ready:
                    client = key.data
                    try:
                        data = client.sock.recv(65536)
                    except OSError:
                        data = b""
                    client.feed(data)
                    if not data:
                        self.selector.unregister(client.sock)
            if not ready:
                time.sleep(0.001)


def register(port, readers, name):
    client = Client(port, name)
    readers.add(client)
    client.send(name.encode() + b"\r\n")
    client.wait_for(b"User %s arrived." % name.encode())
    return client


class Sender(threading.Thread):
    """Sends lines from some clients at a steady pace until stopped."""

    def __init__(self, clients, lines_per_tick, tick, line):
        super().__init__(daemon=True)
        self.clients, self.lines_per_tick, self.tick = clients, lines_per_tick, tick
        self.line = line
        self.stop = threading.Event()

    def run(self):
        count = 0
        while not self.stop.is_set():
            for client in list(self.clients):
                burst = b"".join(self.line(client, count + i)
                                 for i in range(self.lines_per_tick))
                try:
                    client.send(burst)
                except OSError:
                    pass  # the victim's connection, just killed
            count += self.lines_per_tick
            time.sleep(self.tick)


# ---- /proc -----------------------------------------------------------------

def server_side_inodes(server_port, client_port):
    """Inodes of the server's sockets connected to client_port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                inodes.add(fields[9])
    return inodes


def child_serving(server_pid, server_port, client):
    """The pid of the child that holds the server's end of client's socket
    (waiting for the parent to accept and fork, if it has not yet)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        targets = {f"socket:[{inode}]" for inode in server_side_inodes(
            server_port, client.sock.getsockname()[1])}
        for child in children(server_pid):
            try:
                for fd in os.listdir(f"/proc/{child}/fd"):
                    if os.readlink(f"/proc/{child}/fd/{fd}") in targets:
                        return child
            except OSError:
                continue  # it just exited
        time.sleep(0.001)
    fail(f"no child of {server_pid} serves {client.name}")


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def lock_word_address(pid):
    """Where the room lock lives: the start of the shared anonymous mapping
    (shown as /dev/zero (deleted), rw-s), the same address in every process."""
    with open(f"/proc/{pid}/maps") as f:
        for row in f:
            fields = row.split()
            if fields[1] == "rw-s" and row.rstrip().endswith("/dev/zero (deleted)"):
                return int(fields[0].split("-")[0], 16)
    return None


def lock_owner(server_pid, address):
    with open(f"/proc/{server_pid}/mem", "rb") as mem:
        mem.seek(address)
        (word,) = struct.unpack("<I", mem.read(4))
    return word & FUTEX_TID_MASK


def kill_in_lock(server_pid, address, victim, attempts):
    """Stops the victim until it is caught holding the lock, then kills it.
    Returns True if it died holding the lock."""
    for _ in range(attempts if address else 0):
        try:
            os.kill(victim, signal.SIGSTOP)
            deadline = time.monotonic() + DEADLINE
            while process_state(victim) not in ("T", "t"):
                if time.monotonic() > deadline:
                    fail(f"process {victim} did not stop")
                time.sleep(0.0002)
            if lock_owner(server_pid, address) == victim:
                os.kill(victim, signal.SIGKILL)
                return True
            os.kill(victim, signal.SIGCONT)
        except (OSError, PermissionError):
            break
        time.sleep(random.uniform(0, 0.003))
    os.kill(victim, signal.SIGKILL)  # stopped or not
    return False


def die_with_parent():
    """In the server, before exec: SIGKILL when this test dies, however."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


SKIP = 77  # CTest's SKIP_RETURN_CODE


def start_redis():
    """A redis-server of the test's own, on a free loopback port, with no
    persistence: returns (process, URL). Exits with SKIP without one."""
    import shutil
    binary = shutil.which("redis-server")
    if not binary:
        print("no redis-server: skipped")
        sys.exit(SKIP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"redis://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)


def stop_redis(process):
    if process and process.poll() is None:
        process.kill()
        process.wait()


# ---- The test --------------------------------------------------------------

def joining(round_number):
    """One round in five kills the victim while it joins the room."""
    return round_number % 5 == 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--chatters", type=int, default=4)
    parser.add_argument("--attempts", type=int, default=300,
                        help="tries to catch a victim holding the lock")
    parser.add_argument("--redis", action="store_true",
                        help="share the room through a redis-server")
    args = parser.parse_args()

    # If this test is stopped, its server (and so its children) go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("kill_child: stopped"))
    redis, cluster = None, []
    if args.redis:
        redis, url = start_redis()
        cluster = ["--redis", url]
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [args.server, "-p", "0", "--max-backlog", str(64 << 20)] + cluster,
        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        preexec_fn=die_with_parent)
    try:
        first = server.stdout.readline().decode()
        match = re.search(r"running on port (\d+)", first)
        if not match:
            fail(f"no startup line: {first!r}")
        port = int(match.group(1))
        in_lock = run_rounds(args, server.pid, port)
        stop_server(server, log, in_lock)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        stop_redis(redis)


def run_rounds(args, server_pid, port):
    readers = Readers()
    watcher = register(port, readers, "watcher")
    chatters = [register(port, readers, f"c{i}") for i in range(args.chatters)]
    # With --redis a child holds the lock only to list the names: a longer
    # list holds it longer, and a victim is caught in it sooner.
    idle = [register(port, readers, f"idle{i}")
            for i in range(50 if args.redis else 0)]
    everyone = [watcher] + chatters + idle
    chatting = Sender(chatters, 5, 0.005,
                      lambda client, i: b"%s says %d\r\n" % (client.name.encode(), i))
    chatting.start()
    address = lock_word_address(server_pid)
    if address is None:
        print("kill_child: cannot find the shared mapping; killing at random")
    in_lock = 0
    slowest = 0.0
    marks = {client.name: 0 for client in everyone}
    for round_number in range(args.rounds):
        name = f"v{round_number}"
        if joining(round_number):
            # It dies while it joins: before, during or after the change.
            victim = Client(port, name)
            readers.add(victim)
            victim.wait_for(b"Welcome to ChatServer")
            pid = child_serving(server_pid, port, victim)
            victim.send(name.encode() + b"\r\n")
            delay = random.choice((0, 0.0002, 0.0005, 0.001, 0.002))
            if delay:
                time.sleep(random.uniform(0, delay))
            kill_in_lock(server_pid, None, pid, 0)
        else:
            victim = register(port, readers, name)
            # With --redis a child holds the lock only for NAMES.
            every = 1 if args.redis else 10
            flood = Sender([victim], 20, 0.001,
                           lambda client, i: (b"NAMES\r\n" if i % every == 0
                                              else b"%d %s\r\n" % (i, b"x" * 900)))
            flood.start()
            time.sleep(random.uniform(0.005, 0.03))
            pid = child_serving(server_pid, port, victim)
            # Every other round, the child dies wherever it happens to be.
            attempts = args.attempts if round_number % 2 == 0 else 0
            in_lock += kill_in_lock(server_pid, address, pid, attempts)
            flood.stop.set()
            flood.join()

        # Nobody stalls: a line said after the kill reaches everyone.
        killed_at = time.monotonic()
        marker = b"marker %d" % round_number
        chatters[0].send(marker + b"\r\n")
        for client in everyone:
            marks[client.name] = client.wait_for(b"c0: " + marker,
                                                 marks[client.name])
        slowest = max(slowest, time.monotonic() - killed_at)
        if not joining(round_number) or everyone[0].count(
                b"User %s arrived." % name.encode()):
            for client in everyone:
                client.wait_for(b"User %s departed." % name.encode())
        readers.remove(victim)
        victim.sock.close()

    chatting.stop.set()
    chatting.join()
    # A last line through everyone: whatever the server sent before it is in.
    chatters[0].send(b"the end\r\n")
    for client in everyone:
        client.wait_for(b"c0: the end")
    for round_number in range(args.rounds):
        name = b"v%d" % round_number
        # Killed while joining, a victim may never have arrived: then it
        # never departs either, and everyone agrees.
        once = everyone[0].count(b"User %s arrived." % name)
        if once not in (0, 1) or (once == 0 and not joining(round_number)):
            fail(f"{everyone[0].name} saw {name.decode()} arrive {once} times")
        for client in everyone:
            arrived = client.count(b"User %s arrived." % name)
            departed = client.count(b"User %s departed." % name)
            if arrived != once or departed != once:
                fail(f"{client.name} saw {name.decode()} arrive {arrived} and "
                     f"depart {departed} times ({once} expected)")
            if once and (client.lines.index(b"User %s departed." % name) <
                         client.lines.index(b"User %s arrived." % name)):
                fail(f"{client.name} saw {name.decode()} depart before arriving")

    start = len(watcher.lines)
    watcher.send(b"NAMES\r\n")
    header = watcher.wait_for(b"Users here:", start)
    expected = [b" " + client.name.encode() for client in everyone]
    watcher.wait_for(expected[-1], header)
    names = watcher.lines[header + 1: header + 1 + len(expected) + 1]
    if names != expected:
        fail(f"NAMES after the rounds: {names}, expected {expected}")

    serving = children(server_pid)
    zombies = [pid for pid in serving if process_state(pid) == "Z"]
    if len(serving) != len(everyone) or zombies:
        fail(f"{len(serving)} children ({len(zombies)} zombies) for "
             f"{len(everyone)} connections")
    if address and args.rounds >= 10 and in_lock == 0:
        fail("no child was caught holding the lock: the repair went untested")
    joins = [r for r in range(args.rounds) if joining(r)]
    arrived = sum(everyone[0].count(b"User v%d arrived." % r) for r in joins)
    print(f"kill_child: {args.rounds} children killed ({in_lock} holding the "
          f"room lock, {len(joins)} while joining, {arrived} of those after "
          f"arriving); slowest marker after a kill {slowest * 1000:.0f} ms")
    readers.stopping = True
    for client in everyone:
        client.sock.close()
    return in_lock


def stop_server(server, log, in_lock):
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        status = server.wait(timeout=2 * TIME_FACTOR)
    except subprocess.TimeoutExpired:
        fail("the server did not exit within 2 s of SIGTERM")
    took = time.monotonic() - started
    log.seek(0)
    text = log.read().decode(errors="replace")
    if status != 0:
        fail(f"the server exited with status {status}:\n{text[-3000:]}")
    try:
        os.killpg(server.pid, 0)
        fail("processes of the server's group outlived it")
    except ProcessLookupError:
        pass
    report = sanitizer_report(text)
    if report:
        fail("sanitizer report:\n" + report)
    repaired = text.count("died holding the room lock")
    if repaired < in_lock:
        fail(f"{in_lock} children died holding the lock but "
             f"{repaired} repairs were logged")
    print(f"kill_child: {repaired} repairs logged; stopped in "
          f"{took * 1000:.0f} ms; ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"kill_child: FAILED: {error}", file=sys.stderr)
        sys.exit(1)
