#!/usr/bin/env python3
"""chat-evented's own tests: what its design promises beyond the contract
(evented/README.md).

  writes      one write per client per turn of the loop, and no write event
              armed and disarmed around it: counted with strace (skipped
              where strace cannot trace)
  memory      an idle connection costs at most 1 KiB of user-space memory,
              once the server has been quiet for a second (not under a
              sanitizer: its allocator pads every block)
  oom         a client whose output cannot be stored (the address space is
              capped) is dropped and logged as out of memory, not as slow
              (not under a sanitizer: it reserves terabytes of address space)

Usage: evented.py SERVER TEST. Exit 0: passed, 1: failed, 77: skipped.
Standard library only; Linux; loopback only; every wait has a deadline.
"""

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIPPED = 77
TIME_FACTOR = float(os.environ.get("CONFORMANCE_TIME_FACTOR", "1"))


def seconds(value):
    return value * TIME_FACTOR


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def is_sanitized(path):
    with open(path, "rb") as binary:
        return b"__asan_init" in binary.read()


class Server:
    """The server, with its stderr in a file and its port read from stdout."""

    def __init__(self, binary, options=(), prefix=(), env=None):
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            list(prefix) + [binary, "-H", "127.0.0.1", "-p", "0",
                            "--login-timeout", "0"] + list(options),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
            start_new_session=True, env=env)
        out = self.process.stdout.fileno()
        selector = selectors.DefaultSelector()
        selector.register(out, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds(20)
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise Failure(f"no startup line; log: {self.text()[-1000:]}")
            chunk = os.read(out, 4096)
            if not chunk:
                raise Failure(f"server exited before its startup line; "
                              f"log: {self.text()[-1000:]}")
            data += chunk
        self.port = int(data.split(b"\n", 1)[0].split()[-1])

    def text(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def server_pid(self):
        """The server's pid: the process started, or under strace its
        child."""
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                found = children.read().split()
        except OSError:
            found = []
        return int(found[0]) if found else pid

    def stop(self):
        """SIGTERM; the exit status (the contract: 0 within 2 s)."""
        if self.process.poll() is None:
            os.kill(self.server_pid(), signal.SIGTERM)
        try:
            return self.process.wait(seconds(5))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise Failure("the server did not stop within 5 s of SIGTERM")


class Room:
    """Registered clients whose every line is read and counted."""

    def __init__(self, port):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.pending = {}  # socket -> bytes without a line end yet
        self.lines = 0     # lines received by all clients
        self.patterns = {}  # name -> regular expression
        self.counts = {}    # name -> lines that matched it

    def join(self, name, reading=True, rcvbuf=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(seconds(10))
        sock.connect(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(name.encode() + b"\n")
        arrived = f"User {name} arrived.\r\n".encode()
        got = b""
        deadline = time.monotonic() + seconds(10)
        while arrived not in got:
            if time.monotonic() > deadline:
                raise Failure(f"{name}: no arrival line; got {got[-200:]!r}")
            chunk = sock.recv(65536)
            if not chunk:
                raise Failure(f"{name}: closed before its arrival line")
            got += chunk
        if reading:
            sock.setblocking(False)
            self.pending[sock] = b""
            self.selector.register(sock, selectors.EVENT_READ)
        self.read_for(0)
        return sock

    def read_for(self, duration):
        """Reads whatever arrives for `duration` seconds (at least once)."""
        deadline = time.monotonic() + duration
        for _ in range(1000000):
            left = max(0.0, deadline - time.monotonic())
            for key, _ in self.selector.select(left):
                try:
                    chunk = key.fileobj.recv(262144)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    raise Failure("a reading client was reset")
                if not chunk:
                    raise Failure("a reading client was closed")
                data = self.pending[key.fileobj] + chunk
                *complete, self.pending[key.fileobj] = data.split(b"\r\n")
                self.lines += len(complete)
                for name, pattern in self.patterns.items():
                    self.counts[name] = self.counts.get(name, 0) + sum(
                        1 for line in complete if pattern.match(line))
            if time.monotonic() >= deadline:
                return

    def watch(self, name, pattern):
        self.patterns[name] = re.compile(pattern)
        self.counts[name] = 0

    def read_until(self, name, count, timeout):
        """Reads until `count` lines matched the pattern called `name`."""
        deadline = time.monotonic() + seconds(timeout)
        while self.counts[name] < count:
            if time.monotonic() > deadline:
                raise Failure(f"{self.counts[name]} of {count} {name} lines "
                              f"arrived within {seconds(timeout):.0f} s")
            self.read_for(0.01)


def strace_counts(path):
    """{system call: count} from an `strace -c` summary."""
    counts = {}
    with open(path) as summary:
        for line in summary:
            fields = line.split()
            if len(fields) >= 5 and fields[-1].isidentifier() and \
                    fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
    return counts


def test_writes(binary):
    """Bursts of five messages sent in one packet: every recipient must get
    the five lines in one write (a turn of the loop), and the write event is
    armed only when a socket is full, which here it never is."""
    strace = shutil.which("strace")
    if not strace:
        raise Skip("no strace")
    clients, bursts, per_burst = 40, 50, 5
    with tempfile.NamedTemporaryFile(suffix=".strace") as summary:
        # LeakSanitizer cannot work under ptrace: the conformance suite
        # looks for leaks.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(
            filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
        server = Server(binary, env=env, prefix=[
            strace, "-f", "-qq", "-c", "-o", summary.name,
            "-e", "trace=write,writev,send,sendto,sendmsg,epoll_ctl"])
        try:
            room = Room(server.port)
            sockets = [room.join(f"c{i}") for i in range(clients)]
            room.watch("message", rb"c0: m[0-9]+-[0-9]+$")
            for burst in range(bursts):
                sockets[0].sendall(b"".join(
                    f"m{burst}-{k}\n".encode() for k in range(per_burst)))
                room.read_until("message", (burst + 1) * per_burst * clients,
                                30)
            lines = room.lines
        finally:
            status = server.stop()
        if status != 0:
            raise Failure(f"exit status {status} under strace; log: "
                          f"{server.text()[-1000:]}")
        counts = strace_counts(summary.name)
        if not counts:
            raise Skip("strace counted nothing (cannot trace here?)")
    writes = sum(counts.get(name, 0)
                 for name in ("write", "writev", "send", "sendto", "sendmsg"))
    changes = counts.get("epoll_ctl", 0)
    # Registration (about clients^2 / 2 lines, one write per recipient and
    # turn) and the bursts (one write per recipient and burst of five).
    print(f"{lines} lines received, {writes} writes "
          f"({writes / lines:.3f} per line), {changes} epoll_ctl "
          f"({changes / lines:.3f} per line): {counts}")
    if writes > 0.5 * lines:
        raise Failure(f"{writes} writes for {lines} lines: more than one "
                      f"write per recipient and turn")
    if changes > 0.05 * lines:
        raise Failure(f"{changes} epoll_ctl calls for {lines} lines: the "
                      f"write event is armed and disarmed around writes")


def pss(pid):
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise Failure("no Pss in smaps_rollup")


def test_memory(binary):
    """1,000 registered, idle clients: after two quiet seconds (the server
    gives freed heap back after one), each costs at most 1 KiB of the
    server's user-space memory, its share of the registration storm's
    buffers included."""
    if is_sanitized(binary):
        raise Skip("a sanitizer's allocator pads every block")
    clients = 1000
    server = Server(binary, options=["--max-clients", str(clients + 64)])
    try:
        time.sleep(0.3)
        before = pss(server.server_pid())
        room = Room(server.port)
        for i in range(clients):
            room.join(f"c{i}")
        room.read_for(seconds(2.5))  # the last arrivals, then quiet
        growth = (pss(server.server_pid()) - before) / clients
    finally:
        status = server.stop()
    print(f"{growth:.0f} bytes of user-space memory per idle connection")
    if status != 0:
        raise Failure(f"exit status {status}")
    if growth > 1024:
        raise Failure(f"{growth:.0f} bytes per idle connection: more than "
                      f"1 KiB")


def test_oom(binary):
    """The address space capped at 256 MiB and --max-backlog at 1 GiB: a
    client that never reads while another chats in 4 KB lines has its
    output grow until it cannot be stored. It is dropped, its departure is
    logged as out of memory (not slow), the talker is told, and the server
    goes on and stops cleanly."""
    if is_sanitized(binary):
        raise Skip("a sanitizer reserves terabytes of address space")
    server = Server(binary, options=["--max-backlog", str(1 << 30)],
                    prefix=["sh", "-c", 'ulimit -v 262144 && exec "$@"',
                            "sh"])
    try:
        room = Room(server.port)
        hog = room.join("hog", reading=False, rcvbuf=4096)
        talker = room.join("talker")
        room.watch("departure", rb"User hog departed\.$")
        room.watch("echo", rb"talker: x+$")
        line, batch = b"x" * 4000 + b"\n", 16
        deadline = time.monotonic() + seconds(60)
        sent = 0
        while room.counts["departure"] == 0:
            if time.monotonic() > deadline:
                raise Failure(f"hog still there after 60 s; log: "
                              f"{server.text()[-1000:]}")
            # One batch in flight: only the hog's output grows.
            talker.setblocking(True)
            talker.sendall(line * batch)
            talker.setblocking(False)
            sent += batch
            room.read_until("echo", sent, 30)
        log = server.text()
        talker.setblocking(True)
        talker.sendall(b"still here\n")
        talker.setblocking(False)
        room.watch("after", rb"talker: still here$")
        room.read_until("after", 1, 10)
        hog.close()
    finally:
        status = server.stop()
    departures = re.findall(r"\(hog\) departed: (.*)", log)
    print(f"hog departed: {departures}")
    if departures != ["out of memory"]:
        raise Failure(f"hog's departure logged as {departures}, expected "
                      f"['out of memory']; log: {log[-1000:]}")
    if status != 0:
        raise Failure(f"exit status {status}")


TESTS = {"writes": test_writes, "memory": test_memory, "oom": test_oom}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in TESTS:
        print(f"usage: {sys.argv[0]} SERVER {{{','.join(TESTS)}}}",
              file=sys.stderr)
        return 2
    try:
        TESTS[sys.argv[2]](sys.argv[1])
    except Skip as reason:
        print(f"skipped: {reason}")
        return SKIPPED
    except Failure as failure:
        print(f"FAILED: {failure}")
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
