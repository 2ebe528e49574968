#!/usr/bin/env python3
"""Black-box cluster suite: one room across servers through Redis
(docs/PROTOCOL.md and SPEC section 7: --redis URL, --lease SECONDS,
--reuse-port).

Usage:
    python3 cluster.py --servers BIN[,BIN...] [--only CASE[,CASE]] [--list]
                       [--lease SECONDS]

BIN are server binaries (build/bin/chat-evented, ...). Cases that need
several servers take the binaries in turn (server i runs BIN[i mod n]), so
one room mixes the models given: `--servers a,b,c,d` gives the basic case
one server of each. --only runs the named cases (see --list), in the
suite's order.

Each case starts its own redis-server on a free loopback port and always
stops it; every chat server is started as
    BIN --name ROOM -p 0 -H 127.0.0.1 --redis redis://127.0.0.1:P --lease L
and must print `ROOM running on port PORT` first. At the end of each case
every server still running gets SIGTERM and must exit 0 within 2 s (scaled)
and leave no process behind; a server the case killed must have died of
that signal; no server's stderr may hold a sanitizer report. Every wait is
"until the condition holds, or fail at a deadline showing what arrived";
the only sleeps shape the fault (Redis stopped for 1.5 s) or pace attempts.

Environment: CONFORMANCE_TIME_FACTOR (default 1) stretches every deadline,
the lease and the pause, for sanitizer builds.

Exit status: 0 when no case failed (skipped cases allowed), 1 when one
did, 77 when redis-server is not installed (CTest SKIP_RETURN_CODE).
Standard library only (Python 3.8+); Linux.
"""

import argparse
import atexit
import collections
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from server_process import (alive, descendants, group_members,  # noqa: E402
                            sanitizer_report)

TIME_FACTOR = float(os.environ.get("CONFORMANCE_TIME_FACTOR") or 1)
ROOM = b"ClusterRoom"
KEY_PREFIX = b"c10k-chat:" + ROOM + b":"

# The fixed texts of the protocol, as lines without their CR LF. The
# prompt has no line end: the reader stores it as an entry of its own.
PROMPT = b"Enter user name: "
HELP = (b"Commands: NAMES lists who is here, QUIT leaves, anything else is "
        b"sent to everyone")
BYE = b"Bye."
SHUTTING_DOWN = b"Server shutting down"
UNAVAILABLE = b"Room unavailable, try again later"
LOST = b"Room connection lost, please reconnect"
USERS_HERE = b"Users here:"
IAC = 255

ARRIVED = re.compile(rb"User (\S+) arrived\.")
DEPARTED = re.compile(rb"User (\S+) departed\.")
CHAT = re.compile(rb"([^ :]+): (.*)", re.S)

# setpriv makes every process we start die with us, even when we are
# killed (a CTest timeout): redis-server runs in its own session.
SETPRIV = shutil.which("setpriv")
DIE_WITH_US = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []

LIVE = set()  # nodes, redis servers and namespaces to clean up at exit


def seconds(value):
    """A duration stretched by CONFORMANCE_TIME_FACTOR."""
    return value * TIME_FACTOR


def as_bytes(text):
    return text.encode("utf-8") if isinstance(text, str) else text


def fail(message):
    raise AssertionError(message)


class Skip(Exception):
    """The case cannot run here; counted as skipped, not failed."""


def log(text):
    print(text, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def arrived(name):
    return b"User " + as_bytes(name) + b" arrived."


def departed(name):
    return b"User " + as_bytes(name) + b" departed."


def is_room_line(line):
    """An arrival, a departure or a message: what every user must see in
    one order (the HELP line, which looks like a message, is not)."""
    if line == HELP:
        return False
    return bool(ARRIVED.fullmatch(line) or DEPARTED.fullmatch(line)
                or CHAT.fullmatch(line))


_SANITIZED = {}


def flavour(binary):
    """'asan', 'tsan' or '' for a binary (its runtime's entry point)."""
    if binary not in _SANITIZED:
        try:
            with open(binary, "rb") as content:
                data = content.read()
        except OSError:
            data = b""
        _SANITIZED[binary] = ("tsan" if b"__tsan_init" in data else
                              "asan" if b"__asan_init" in data else "")
    return _SANITIZED[binary]


def model_of(binary):
    name = os.path.basename(binary)
    name = name[5:] if name.startswith("chat-") else name
    kind = flavour(binary)
    return f"{name}/{kind}" if kind else name


# -- Redis -------------------------------------------------------------------

class RespError(Exception):
    pass


class Resp:
    """One RESP connection to Redis, every read under a deadline."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""

    def close(self):
        self.sock.close()

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for arg in args:
            arg = as_bytes(str(arg) if isinstance(arg, int) else arg)
            out += b"$%d\r\n%s\r\n" % (len(arg), arg)
        self.sock.settimeout(self.timeout)
        self.sock.sendall(out)
        return self._reply(time.monotonic() + self.timeout)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no reply from Redis")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.buffer += chunk

    def _line(self, deadline):
        while b"\r\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _reply(self, deadline):
        line = self._line(deadline)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill(deadline)
            data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            return data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._reply(deadline) for _ in range(count)]
        raise RespError(f"unexpected reply {line[:80]!r}")


REDIS_SERVER = shutil.which("redis-server")


class Redis:
    """A redis-server of our own: no persistence, its own session, killed
    with its process group when it stops or when we exit."""

    def __init__(self, binds=("127.0.0.1",)):
        self.binds = list(binds)
        self.port = None
        self.dir = tempfile.mkdtemp(prefix="c10k-cluster-redis-")
        self.log = tempfile.TemporaryFile()
        self.process = None
        LIVE.add(self)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def url_for(self, host):
        return f"redis://{host}:{self.port}"

    def start(self, timeout=10.0):
        """Starts on a free port (or on self.port again: a restart), and
        waits until it answers PING."""
        fixed = self.port is not None
        for _ in range(1 if fixed else 5):
            port = self.port if fixed else free_port()
            self.process = subprocess.Popen(
                DIE_WITH_US + [REDIS_SERVER, "--port", str(port),
                               "--bind", *self.binds,
                               "--save", "", "--appendonly", "no",
                               "--daemonize", "no", "--protected-mode", "no",
                               "--dir", self.dir],
                stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=subprocess.STDOUT, start_new_session=True)
            self.port = port
            if self._answers(timeout):
                return self
            if not fixed:  # the port was taken meanwhile: another one
                self.port = None
        fail(f"redis-server did not answer PING within {seconds(timeout):.0f}"
             f" s; its log: {self.log_text()[-1500:]}")

    def _answers(self, timeout):
        deadline = time.monotonic() + seconds(timeout)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                connection = Resp("127.0.0.1", self.port, 1.0)
                try:
                    if connection.call("PING") == "PONG":
                        return True
                finally:
                    connection.close()
            except (OSError, RespError):
                pass
            time.sleep(0.02)  # polled, with a deadline
        self.kill()
        return False

    def call(self, *args):
        connection = Resp("127.0.0.1", self.port, seconds(5))
        try:
            return connection.call(*args)
        finally:
            connection.close()

    def commandstats(self):
        """{command: calls} from INFO commandstats."""
        text = self.call("INFO", "commandstats").decode()
        stats = {}
        for line in text.splitlines():
            match = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if match:
                stats[match.group(1)] = int(match.group(2))
        return stats

    def pause(self):
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self):
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass
        self.process.wait()

    def log_text(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self):
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        LIVE.discard(self)

    cleanup = stop


# -- chat servers ------------------------------------------------------------

class Node:
    """One chat server process, in its own process group, stderr to a
    temporary file. `prefix` runs it through another command that execs
    it (ip netns exec NS)."""

    def __init__(self, binary, args, label, prefix=(),
                 client_host="127.0.0.1", room=ROOM):
        self.binary = binary
        self.label = label
        self.room = room
        self.client_host = client_host
        self.args = list(args)
        self.port = None
        self.status = None
        self.expected_status = 0  # what finish() accepts
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            DIE_WITH_US + list(prefix) + [binary] + self.args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.stderr, start_new_session=True)
        self.pid = self.process.pid
        self.below = set()
        LIVE.add(self)

    def __str__(self):
        return self.label

    def wait_started(self, timeout=30.0):
        """Reads the startup line `ROOM running on port PORT`."""
        deadline = time.monotonic() + seconds(timeout)
        out = self.process.stdout.fileno()
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(f"{self}: no startup line within {seconds(timeout):.0f}"
                     f" s; stdout {data!r}; stderr: {self.stderr_tail()}")
            ready, _, _ = select.select([out], [], [], remaining)
            if ready:
                chunk = os.read(out, 4096)
                if not chunk:
                    self.status = self.process.wait()
                    self.expected_status = self.status  # reported here
                    fail(f"{self}: exited with status {self.status} before "
                         f"its startup line; stderr: {self.stderr_tail()}")
                data += chunk
        first = data.split(b"\n", 1)[0]
        match = re.fullmatch(rb"(.*) running on port ([0-9]+)", first, re.S)
        if not match or match.group(1) != self.room:
            fail(f"{self}: startup line {first!r}, expected "
                 f"{self.room + b' running on port PORT'!r}")
        self.port = int(match.group(2))
        return self

    def stderr_text(self):
        chunks, offset = [], 0
        while True:
            chunk = os.pread(self.stderr.fileno(), 1 << 20, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def stderr_tail(self, size=1500):
        return repr(self.stderr_text()[-size:])

    def stop(self, signum=signal.SIGTERM, within=2.0):
        """Sends the signal; the server must exit within `within` seconds
        (scaled). Returns the exit status."""
        if self.status is not None:
            return self.status
        self.below = descendants(self.pid)
        self.process.send_signal(signum)
        try:
            self.status = self.process.wait(seconds(within))
        except subprocess.TimeoutExpired:
            self.kill()
            fail(f"{self}: still running {seconds(within):.1f} s after "
                 f"{signal.Signals(signum).name}; killed")
        return self.status

    def kill(self):
        """SIGKILL to the whole process group: the server dies at once."""
        self.below = descendants(self.pid) | self.below
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        self.status = self.process.wait()
        self.expected_status = -signal.SIGKILL
        return self.status

    def wait_exit(self, timeout):
        """The exit status, once it exits by itself within `timeout` s
        (not scaled), or None."""
        try:
            self.status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.status

    def finish(self):
        """Stops the server if needed; lists what went wrong."""
        problems = []
        if self.status is None:
            try:
                self.stop(signal.SIGTERM)
            except AssertionError as error:
                problems.append(str(error))
        if self.status != self.expected_status:
            problems.append(f"{self}: exit status {self.status}, expected "
                            f"{self.expected_status} (negative: killed by "
                            f"that signal)")

        def survivors():
            return sorted(set(group_members(self.pid))
                          | {pid for pid in self.below if alive(pid)})
        deadline = time.monotonic() + seconds(1.0)
        while survivors() and time.monotonic() < deadline:
            time.sleep(0.01)  # polled, with a deadline
        left = survivors()
        if left:
            problems.append(f"{self}: processes outlived it: {left}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        report = sanitizer_report(self.stderr_text())
        if report:
            problems.append(f"{self}: sanitizer report on stderr:\n{report}")
        self.process.stdout.close()
        self.stderr.close()
        LIVE.discard(self)
        return problems

    def cleanup(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass


def owner_pids(node):
    return {node.pid} | descendants(node.pid)


def socket_inode(local_port, remote_port):
    """The inode of the IPv4 TCP socket between these ports
    (/proc/net/tcp), or None."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local = int(fields[1].split(":")[1], 16)
            remote = int(fields[2].split(":")[1], 16)
            if (local, remote) == (local_port, remote_port):
                return fields[9]
    return None


def holds_socket(pids, inode):
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
                except OSError:
                    pass
        except OSError:
            pass
    return False


# -- clients -----------------------------------------------------------------

class User:
    """One TCP connection, read by a thread of its own into a list of
    lines (without CR LF; the prompt is an entry of its own), each with its
    arrival time. Waits are on conditions with deadlines."""

    def __init__(self, node, name, host=None):
        self.node = node
        self.name = as_bytes(name)
        self.label = f"{name}@{node}"
        self.sock = socket.create_connection(
            (host or node.client_host, node.port), timeout=seconds(10))
        self.sock.settimeout(seconds(10))  # sends; reads wait in select
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.lines = []
        self.times = []
        self.chats = 0  # how many of the lines are messages
        self.eof_at = None
        self.error = None
        self.cursor = 0
        self.closed = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        pending = bytearray()
        for _ in range(100000000):  # bounded; ends at EOF or close()
            if self.closed:
                break
            try:
                # select, not the socket's timeout: send() may be waiting
                # on the same socket in another thread.
                ready, _, _ = select.select([self.sock], [], [], 0.2)
                if not ready:
                    continue
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except (OSError, ValueError):
                chunk = b""
            now = time.monotonic()
            if not chunk:
                with self.cond:
                    self.eof_at = now
                    self.cond.notify_all()
                return
            if IAC in chunk and self.error is None:
                self.error = (f"{self.label}: received byte 0xFF (IAC), "
                              f"never sent one: {chunk[:120]!r}")
            pending += chunk
            parsed = []
            while pending:
                if pending.startswith(PROMPT):
                    parsed.append(PROMPT)
                    del pending[:len(PROMPT)]
                    continue
                end = pending.find(b"\r\n")
                if end < 0:
                    break
                parsed.append(bytes(pending[:end]))
                del pending[:end + 2]
            if parsed:
                with self.cond:
                    for line in parsed:
                        self.lines.append(line)
                        self.times.append(now)
                        if line != HELP and CHAT.fullmatch(line):
                            self.chats += 1
                    self.cond.notify_all()

    def send(self, data):
        self.sock.sendall(as_bytes(data))  # the socket's timeout: 10 s

    def say(self, text):
        self.send(as_bytes(text) + b"\r\n")

    def close(self):
        """Closes the connection: FIN at once (shutdown wakes the reading
        thread), the descriptor once that thread is done with it."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if threading.current_thread() is not self.thread:
                self.thread.join(5)
            self.sock.close()

    def reset(self):
        """Closes with SO_LINGER 0: the server sees a TCP reset."""
        if not self.closed:
            self.closed = True  # the reading thread stops within 0.2 s
            self.thread.join(5)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
            self.sock.close()

    def half_close(self):
        """Shuts down the sending side only: the server handles the
        lines it has, then the user departs and is closed."""
        self.sock.shutdown(socket.SHUT_WR)

    # -- waiting -------------------------------------------------------------

    def context(self, count=12):
        with self.cond:
            tail = self.lines[-count:]
            eof = self.eof_at is not None
        return (f"\n    last lines of {self.label}: "
                f"{[line[:80] for line in tail]}" + (" + EOF" if eof else ""))

    def wait(self, predicate, timeout, what):
        """Until predicate() (run under the lock) returns something other
        than None or False; returns it. Fails at the deadline."""
        deadline = time.monotonic() + seconds(timeout)
        with self.cond:
            while True:
                if self.error:
                    fail(self.error)
                result = predicate()
                if result is not None and result is not False:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(min(remaining, 0.5))
        fail(f"{self.label}: {what} not within {seconds(timeout):.1f} s"
             + self.context())

    def next_line(self, timeout=10.0):
        def ready():
            if len(self.lines) > self.cursor:
                return True
            if self.eof_at is not None:
                fail(f"{self.label}: connection closed, a line was expected"
                     + self.context())
            return None
        self.wait(ready, timeout, "a line")
        with self.cond:
            line = self.lines[self.cursor]
            self.cursor += 1
        return line

    def expect(self, *expected, timeout=10.0):
        """The next lines from the cursor are exactly these."""
        for want in expected:
            want = as_bytes(want)
            got = self.next_line(timeout)
            if got != want:
                fail(f"{self.label}: expected {want!r}, received {got!r}"
                     + self.context())

    def mark(self):
        """Moves the cursor past everything received so far (only in a
        quiet room: nothing may still be on its way)."""
        with self.cond:
            self.cursor = len(self.lines)

    def ask(self, text, *expected, timeout=10.0):
        """In a quiet room: sends a line, its answer is the next lines."""
        self.mark()
        self.say(text)
        self.expect(*expected, timeout=timeout)

    def find(self, line, start=0):
        with self.cond:
            for at in range(start, len(self.lines)):
                if self.lines[at] == line:
                    return at
        return None

    def wait_line(self, line, timeout=10.0, start=0):
        """Until `line` is among the lines received (from `start`);
        returns its index."""
        line = as_bytes(line)

        def found():
            for at in range(start, len(self.lines)):
                if self.lines[at] == line:
                    return at + 1  # not 0: 0 would read as False
            return None
        return self.wait(found, timeout, f"{line!r}") - 1

    def wait_chats(self, count, timeout):
        self.wait(lambda: self.chats >= count, timeout,
                  f"{count} messages (have {self.chats})")

    def wait_eof(self, timeout=10.0):
        self.wait(lambda: self.eof_at is not None, timeout,
                  "the server closing the connection")
        return self.eof_at

    def time_of(self, line):
        at = self.find(as_bytes(line))
        return None if at is None else self.times[at]

    def count(self, line):
        with self.cond:
            return self.lines.count(as_bytes(line))

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def room_lines(self):
        return [line for line in self.snapshot() if is_room_line(line)]


def check_same_order(users, what="room lines"):
    """All users saw the room's lines in one order: for each pair, from
    the later one's arrival on, one sequence is a prefix of the other."""
    sequences = [(user, user.room_lines()) for user in users]
    for i, (first, seq_a) in enumerate(sequences):
        for second, seq_b in sequences[i + 1:]:
            # Where the later one arrived in the other's view. A name may
            # have been someone else's before (a dead server's user): the
            # candidates are every arrival under that name, latest first.
            candidates = [(seq_a[at:], seq_b) for at in
                          range(len(seq_a) - 1, -1, -1)
                          if seq_a[at] == arrived(second.name)]
            candidates += [(seq_a, seq_b[at:]) for at in
                           range(len(seq_b) - 1, -1, -1)
                           if seq_b[at] == arrived(first.name)]
            if not candidates:
                fail(f"{what}: neither {first.label} nor {second.label} saw "
                     f"the other's arrival")
            for a, b in candidates:
                length = min(len(a), len(b))
                if a[:length] == b[:length]:
                    break
            else:
                a, b = candidates[0]
                length = min(len(a), len(b))
                at = next(k for k in range(length) if a[k] != b[k])
                fail(f"{what}: {first.label} and {second.label} saw the room "
                     f"in different orders, from line {at} of their common "
                     f"part:\n    {[x[:50] for x in a[max(0, at - 2):at + 3]]}"
                     f"\n    {[x[:50] for x in b[max(0, at - 2):at + 3]]}")


def check_exactly_once(users, lines, what):
    for user in users:
        for line in lines:
            seen = user.count(line)
            if seen != 1:
                fail(f"{user.label}: {line!r} {seen} times, expected exactly "
                     f"once ({what})" + user.context())


# -- a case's fixture --------------------------------------------------------

class Case:
    """What one case started: Redis, servers, users. finish() stops all
    of it, servers first, and lists the servers' problems."""

    def __init__(self, binaries, lease):
        self.binaries = binaries
        self.lease = lease  # seconds, already scaled
        self.redis = None
        self.nodes = []
        self.users = []
        self.before_finish = []  # callables (heal a cut link...)
        self.after_finish = []   # callables (remove a namespace...)

    def binary(self, index):
        return self.binaries[index % len(self.binaries)]

    def start_redis(self, binds=("127.0.0.1",)):
        self.redis = Redis(binds).start()
        return self.redis

    def node(self, index, redis=True, lease=None, port=0, host="127.0.0.1",
             extra=(), prefix=(), client_host=None, redis_url=None,
             binary=None, start=True):
        binary = binary or self.binary(index)
        args = ["--name", ROOM.decode(), "-p", str(port), "-H", host]
        if redis:
            args += ["--redis", redis_url or self.redis.url,
                     "--lease", f"{lease or self.lease:g}"]
        args += list(extra)
        label = f"{model_of(binary)}#{len(self.nodes)}"
        node = Node(binary, args, label, prefix=prefix,
                    client_host=client_host or host)
        self.nodes.append(node)
        return node.wait_started() if start else node

    def connect(self, node, name, host=None):
        user = User(node, name, host)
        self.users.append(user)
        user.expect(b"Welcome to " + ROOM, PROMPT)
        return user

    def register(self, node, name, everyone=(), retry_for=0.0):
        """A new user on node; `everyone` sees it arrive. With retry_for,
        `Room unavailable` answers are retried for that long (scaled)."""
        user = self.connect(node, name)
        deadline = time.monotonic() + seconds(retry_for)
        for attempt in range(1000):
            user.say(name)
            line = user.next_line()
            if line == arrived(name):
                break
            if line == UNAVAILABLE and time.monotonic() < deadline:
                user.expect(PROMPT)
                time.sleep(0.1)  # paces the attempts
                continue
            fail(f"{user.label}: expected {arrived(name)!r} after sending "
                 f"the name, received {line!r}" + user.context())
        for member in everyone:
            try:
                member.wait_line(arrived(name))
            except AssertionError as error:
                fail(f"{error}\n    ({name} registered on {node}, "
                     f"{member.label.split('@')[0]} is on {member.node})")
        return user

    def room_state(self):
        """Redis's view of the room (its keys and what they hold, in
        short), to explain a failure."""
        if self.redis is None or self.redis.process is None \
                or self.redis.process.poll() is not None:
            return ""
        try:
            connection = Resp("127.0.0.1", self.redis.port, 2.0)
        except OSError:
            return ""
        text = "\n  --- Redis's keys:"
        try:
            keys = sorted(connection.call("KEYS", KEY_PREFIX + b"*"))[:40]
            for key in keys:
                kind = connection.call("TYPE", key)
                if kind == "zset":
                    value = connection.call("ZRANGE", key, 0, 30,
                                            "WITHSCORES")
                elif kind == "hash":
                    value = connection.call("HGETALL", key)
                elif kind == "set":
                    value = connection.call("SMEMBERS", key)
                elif kind == "string":
                    value = connection.call("GET", key)
                elif kind == "stream":
                    value = (f"{connection.call('XLEN', key)} entries, the "
                             f"last: "
                             f"{connection.call('XREVRANGE', key, '+', '-', 'COUNT', 3)}")
                else:
                    value = kind
                text += f"\n    {key.decode()} ({kind}): {str(value)[:300]}"
        except (OSError, RespError) as error:
            text += f" ({error})"
        finally:
            connection.close()
        return text

    def logs(self, lines=25):
        """The end of every server's stderr, to explain a failure."""
        text = self.room_state()
        for node in self.nodes:
            tail = node.stderr_text().splitlines()[-lines:]
            text += f"\n  --- {node} (pid {node.pid}), stderr's last lines:\n"
            text += "\n".join("    " + line for line in tail)
        return text

    def finish(self):
        problems = []
        for step in self.before_finish:
            try:
                step()
            except Exception as error:  # noqa: BLE001 (report, go on)
                problems.append(f"cleanup: {error}")
        for user in self.users:
            user.close()
        for node in self.nodes:
            problems += node.finish()
        if self.redis is not None:
            self.redis.stop()
        for step in self.after_finish:
            try:
                step()
            except Exception as error:  # noqa: BLE001
                problems.append(f"cleanup: {error}")
        return problems


def everyone_sees(users, line, timeout=10.0):
    for user in users:
        user.wait_line(line, timeout)


def connected(users):
    for user in users:
        if user.eof_at is not None:
            fail(f"{user.label}: was disconnected" + user.context())


# -- the cases -----------------------------------------------------------------

CASES = []


def case(function):
    CASES.append(function)
    return function


def node_count(case_):
    return max(4, len(case_.binaries))


@case
def unreachable(c):
    """Redis unreachable at start: exit 1 within 5 s, a line naming the
    URL on stderr (alone with -q); a unix: URL likewise."""
    port = free_port()  # nobody listens there
    url = f"redis://127.0.0.1:{port}"
    unix_url = f"unix:{tempfile.gettempdir()}/c10k-cluster-none-{port}.sock"
    for binary in dict.fromkeys(c.binaries):
        for target, quiet in ((url, False), (url, True), (unix_url, True)):
            extra = ["-q"] if quiet else []
            node = c.node(0, redis_url=target, extra=extra, binary=binary,
                          start=False)
            began = time.monotonic()
            status = node.wait_exit(seconds(5))
            took = time.monotonic() - began
            if status is None:
                fail(f"{node} --redis {target}: still running after "
                     f"{seconds(5):.0f} s; stderr: {node.stderr_tail()}")
            node.expected_status = status
            text = node.stderr_text()
            if status != 1:
                fail(f"{node} --redis {target}: exit status {status}, "
                     f"expected 1; stderr: {text[-800:]!r}")
            naming = [line for line in text.splitlines() if target in line]
            if len(naming) != 1:
                fail(f"{node} --redis {target}: {len(naming)} stderr lines "
                     f"name the URL, expected one; stderr: {text[-800:]!r}")
            if quiet and text.splitlines() != naming:
                fail(f"{node} -q --redis {target}: stderr should be that one "
                     f"line, it is {text[-800:]!r}")
            stdout = node.process.stdout.read()
            if b"running on port" in stdout:
                log(f"  note: {node} printed {stdout.strip()!r} before "
                    f"giving up on Redis")
            log(f"  {node}: exit 1 after {took:.2f} s: {naming[0].strip()}")


@case
def no_redis(c):
    """Without --redis two servers with one room name are two rooms."""
    first = c.node(0, redis=False)
    second = c.node(1, redis=False)
    ada1 = c.register(first, "ada")
    ada2 = c.register(second, "ada")  # the same name, another room
    bob1 = c.register(first, "bob", [ada1])
    bob1.say("hello from the first room")
    everyone_sees([ada1, bob1], b"bob: hello from the first room")
    ada2.ask("marker", b"ada: marker")
    ada2.ask("NAMES", USERS_HERE, b" ada")
    ada1.ask("NAMES", USERS_HERE, b" ada", b" bob")
    if ada2.find(arrived("bob")) is not None:
        fail(f"{ada2.label} saw bob arrive in the other room")


@case
def basic(c):
    """Four servers (one per model given), one room: arrivals, messages,
    departures everywhere; one order; NAMES; a name taken elsewhere; HELP
    and QUIT."""
    c.start_redis()
    nodes = [c.node(i) for i in range(node_count(c))]
    users, names = [], []
    for round_ in "ab":
        for i, node in enumerate(nodes):
            name = f"u{i}{round_}"
            users.append(c.register(node, name, users))
            names.append(name)
    for user in users:
        user.say(f"hello from {user.name.decode()}")
    for user in users:
        for other in users:
            other.wait_line(b"%s: hello from %s" % (user.name, user.name))
    # The room is quiet: answers are the next lines.
    listing = [USERS_HERE] + [b" " + as_bytes(name) for name in names]
    for user in users[:len(nodes)]:
        user.ask("NAMES", *listing)
        user.ask(" help ", HELP)
    # A name taken on another server.
    late = []
    for i, node in enumerate(nodes):
        owner = users[(i + 1) % len(nodes)]
        newcomer = c.connect(node, f"n{i}")
        newcomer.say(owner.name)
        newcomer.expect(b"Username %s not available" % owner.name, PROMPT)
        newcomer.say(f"n{i}")
        newcomer.expect(arrived(f"n{i}"))
        everyone_sees(users + late, arrived(f"n{i}"))
        late.append(newcomer)
        names.append(f"n{i}")
    everyone = users + late
    # Departures, each on another server: QUIT, a closed connection (FIN),
    # a reset one (RST), a half-closed one after a last message.
    # Each departure is awaited before anything else happens in the room.
    quitter, closer, resetter, halver = users[0:4]
    gone = (quitter, closer, resetter, halver)
    remaining = [u for u in everyone if u not in gone]

    def departs(user, how, timeout=5.0):
        began = time.monotonic()
        try:
            everyone_sees(remaining, departed(user.name), timeout)
        except AssertionError as error:
            fail(f"after {how} on {user.node}: {error}")
        log(f"  {how} on {user.node}: departed everywhere within "
            f"{time.monotonic() - began:.3f} s")
    quitter.ask("quit", BYE)
    quitter.wait_eof()
    departs(quitter, "QUIT")
    closer.close()
    departs(closer, "a closed connection")
    resetter.reset()
    departs(resetter, "a reset connection")
    halver.say("my last words")
    halver.half_close()
    halver.wait_eof()
    everyone_sees(remaining, b"%s: my last words" % halver.name)
    departs(halver, "a half-close")
    remaining[-1].say("the end")
    everyone_sees(remaining, b"%s: the end" % remaining[-1].name)
    check_exactly_once(remaining, [departed(u.name) for u in gone],
                       "departures")
    left = [n for n in names
            if as_bytes(n) not in [u.name for u in gone]]
    for user in remaining[:len(nodes)]:
        user.ask("NAMES", USERS_HERE, *[b" " + as_bytes(n) for n in left])
    check_same_order(everyone)
    connected(remaining)


@case
def load(c):
    """4 servers x 5 users x 200 lines sent at once: every user sees every
    line once, all in one order, each sender's lines in the order sent."""
    per_node, per_user = 5, 200
    c.start_redis()
    nodes = [c.node(i) for i in range(node_count(c))]
    users = []
    for k in range(per_node):
        for i, node in enumerate(nodes):
            users.append(c.register(node, f"w{i}_{k}", users))
    total = len(users) * per_user
    pad = "." * 30

    def line(user, number):
        return b"%s %04d %s" % (user.name, number, pad.encode())
    began = time.monotonic()
    for user in users:
        user.send(b"".join(line(user, n) + b"\r\n" for n in range(per_user)))
    for user in users:
        user.wait_chats(total, timeout=60)
    took = time.monotonic() - began
    for user in users:
        chats = [x for x in user.room_lines() if CHAT.fullmatch(x)]
        counts = collections.Counter(chats)
        for sender in users:
            mine = [x for x in chats if x.startswith(sender.name + b": ")]
            want = [sender.name + b": " + line(sender, n)
                    for n in range(per_user)]
            if mine != want:
                repeated = [x for x in want if counts[x] > 1][:3]
                missing = [x for x in want if counts[x] == 0][:3]
                at = next((k for k, (x, y) in enumerate(zip(mine, want))
                           if x != y), min(len(mine), len(want)))
                fail(f"{user.label}: {sender.label}'s lines: {len(mine)} of "
                     f"{per_user}; repeated {repeated}, missing {missing}; "
                     f"the {at}th is {mine[at] if at < len(mine) else None!r}"
                     f", expected {want[at] if at < len(want) else None!r}")
        if len(chats) != total:
            fail(f"{user.label}: {len(chats)} messages, expected {total}")
    check_same_order(users)
    connected(users)
    log(f"  {total} lines from {len(users)} users on {len(nodes)} servers "
        f"reached all {len(users)} users in {took:.2f} s")


@case
def fanout(c):
    """A message crosses Redis once per server, not once per user: the
    commands Redis runs grow with the messages, not messages x users."""
    per_node, messages = 12, 200
    c.start_redis()
    nodes = [c.node(i) for i in range(2)]
    users = []
    for k in range(per_node):
        for node in nodes:
            users.append(c.register(node, f"f{len(users)}", users))
    # Quiet: every user has every arrival. Count from here.
    before = c.redis.commandstats()
    began = time.monotonic()
    by_user = collections.defaultdict(list)
    for number in range(messages):
        by_user[users[number % len(users)]].append(b"m%d\r\n" % number)
    for user, lines in by_user.items():
        user.send(b"".join(lines))
    for user in users:
        user.wait_chats(messages, timeout=30)
    after = c.redis.commandstats()
    took = time.monotonic() - began
    delta = {name: after.get(name, 0) - before.get(name, 0)
             for name in after}
    delta.pop("info", None)
    delta = {name: calls for name, calls in delta.items() if calls}
    total = sum(delta.values())
    per_user_floor = messages * len(users)
    budget = per_user_floor // 3
    writes = sum(calls for name, calls in delta.items()
                 if name.split("|")[0] in ("xadd", "evalsha", "eval", "fcall",
                                           "publish", "spublish", "rpush",
                                           "lpush", "zadd"))
    log(f"  {messages} messages, {len(users)} users on 2 servers, "
        f"{took:.2f} s: Redis ran {total} commands ({writes} writes): "
        f"{dict(sorted(delta.items(), key=lambda kv: -kv[1]))}")
    if total > budget:
        fail(f"Redis ran {total} commands for {messages} messages to "
             f"{len(users)} users on 2 servers: more than {budget} "
             f"(a third of one per message per user); {delta}")
    if writes > budget:
        fail(f"{writes} write commands for {messages} messages: they grow "
             f"with the users; {delta}")
    check_same_order(users)


@case
def sigterm(c):
    """SIGTERM: the server's users get `Server shutting down`, the other
    servers' users see each of them depart promptly (well within the
    lease); in turn for every server but the last."""
    c.start_redis()
    nodes = [c.node(i) for i in range(node_count(c))]
    users = {node: [] for node in nodes}
    everyone = []
    for k in range(2):
        for i, node in enumerate(nodes):
            user = c.register(node, f"t{i}{k}", everyone)
            users[node].append(user)
            everyone.append(user)
    prompt_bound = c.lease / 2
    gone = []
    for node in nodes[:-1]:
        mine = users[node]
        others = [u for u in everyone if u not in mine and u not in gone]
        for user in mine:
            user.mark()  # the room is quiet
        signalled = time.monotonic()
        status = node.stop(signal.SIGTERM)
        if status != 0:
            fail(f"{node}: exit status {status} after SIGTERM, expected 0")
        for user in mine:
            user.expect(SHUTTING_DOWN, timeout=5)
            user.wait_eof()
        for user in mine:
            for other in others:
                other.wait_line(departed(user.name), timeout=c.lease + 5)
                took = other.time_of(departed(user.name)) - signalled
                if took > prompt_bound:
                    fail(f"{other.label}: {departed(user.name)!r} came "
                         f"{took:.2f} s after SIGTERM to {node}, expected "
                         f"within {prompt_bound:.1f} s (half the lease)")
        worst = max(o.time_of(departed(u.name)) for u in mine
                    for o in others) - signalled
        log(f"  SIGTERM {node}: its {len(mine)} users departed on every "
            f"other server within {worst:.3f} s")
        gone += mine
    last = users[nodes[-1]]
    last[0].say("the end")
    everyone_sees(last, b"%s: the end" % last[0].name)
    check_exactly_once(last, [departed(u.name) for u in gone], "departures")
    check_same_order([u for u in everyone if u not in gone])


@case
def sigkill(c):
    """SIGKILL: the dead server's users depart on every other server within
    the lease, each exactly once, and their names are free again. One
    server killed alone, then two at once."""
    c.start_redis()
    nodes = [c.node(i) for i in range(node_count(c))]
    users = {node: [] for node in nodes}
    everyone = []
    for k in range(2):
        for i, node in enumerate(nodes):
            user = c.register(node, f"k{i}{k}", everyone)
            users[node].append(user)
            everyone.append(user)
    bound = c.lease + seconds(0.5)
    gone = []
    rounds = [nodes[:1], nodes[1:3]] if len(nodes) >= 4 else [nodes[:1]]
    for victims in rounds:
        dying = [u for node in victims for u in users[node]]
        watchers = [u for u in everyone if u not in dying and u not in gone]
        killed = time.monotonic()
        for node in victims:
            node.kill()
        worst = 0.0
        for user in dying:
            for watcher in watchers:
                watcher.wait_line(departed(user.name), timeout=c.lease + 5)
                took = watcher.time_of(departed(user.name)) - killed
                worst = max(worst, took)
                if took > bound:
                    fail(f"{watcher.label}: {departed(user.name)!r} came "
                         f"{took:.2f} s after SIGKILL, expected within the "
                         f"lease ({c.lease:g} s, + {seconds(0.5):.1f} s)")
            times = sorted(w.time_of(departed(user.name)) - killed
                           for w in watchers)
            log(f"  SIGKILL {'+'.join(map(str, victims))}: "
                f"{user.name.decode()} departed on the {len(watchers)} "
                f"other users' servers after {times[0]:.2f}-{times[-1]:.2f} s")
        gone += dying
    survivors = [u for u in everyone if u not in gone]
    survivors[0].say("after the deaths")
    everyone_sees(survivors, b"%s: after the deaths" % survivors[0].name)
    check_exactly_once(survivors, [departed(u.name) for u in gone],
                       "departures of the dead servers' users")
    # Their names are free: one taken on a survivor, one on a new server.
    reborn = c.register(nodes[-1], gone[0].name.decode(), survivors)
    fresh = c.node(len(nodes))
    second = c.register(fresh, gone[-1].name.decode(), survivors + [reborn])
    second.say("back again")
    everyone_sees(survivors + [reborn, second], b"%s: back again"
                  % second.name)
    check_same_order(survivors + [reborn, second])


@case
def pause(c):
    """Redis stopped (SIGSTOP) for 1.5 s of a 4 s lease while users on two
    servers talk: nothing lost, nothing repeated, one order, nobody
    disconnected. A line may be refused with `Room unavailable`; then it
    must reach nobody."""
    stalled(c, seconds(4), seconds(1.5))


@case
def pause_long(c):
    """Redis stopped for 3 s of a 4 s lease, long enough for a server to
    give up waiting and reconnect: the same as pause (the lines missed
    arrive, in order, once; nobody retired)."""
    stalled(c, seconds(4), seconds(3))


def stalled(c, lease, stopped):
    """Users on two servers talk while Redis is stopped for `stopped`
    seconds, less than the lease."""
    c.start_redis()
    nodes = [c.node(i, lease=lease) for i in range(2)]
    users = []
    for k in range(2):
        for i, node in enumerate(nodes):
            users.append(c.register(node, f"p{i}{k}", users))
    # On each server a talker, who waits for each line's echo (or refusal)
    # before the next, and a streamer, who sends every 20 ms regardless:
    # its lines reach the server while Redis is stopped.
    talkers, streamers = users[:2], users[2:]
    stop = threading.Event()
    outcome = {}  # user -> (lines sent, error)

    def talk(user):
        sent = []
        try:
            for number in range(1000):
                if stop.is_set():
                    break
                text = b"%s %d" % (user.name, number)
                echo = user.name + b": " + text
                with user.cond:
                    start = len(user.lines)
                user.say(text)
                sent.append(echo)

                def settled():
                    for at in range(start, len(user.lines)):
                        if user.lines[at] in (echo, UNAVAILABLE):
                            return True
                    return None
                user.wait(settled, lease + 5,
                          f"the echo of {text!r} or {UNAVAILABLE!r}")
                time.sleep(0.05)  # paces the talk
            outcome[user] = (sent, None)
        except Exception as error:  # noqa: BLE001 (reported below)
            outcome[user] = (sent, error)

    def stream(user):
        sent = []
        try:
            for number in range(5000):
                if stop.is_set():
                    break
                text = b"%s %d" % (user.name, number)
                user.say(text)
                sent.append(user.name + b": " + text)
                time.sleep(0.02)  # paces the stream
            outcome[user] = (sent, None)
        except Exception as error:  # noqa: BLE001 (reported below)
            outcome[user] = (sent, error)

    threads = ([threading.Thread(target=talk, args=(u,)) for u in talkers]
               + [threading.Thread(target=stream, args=(u,))
                  for u in streamers])
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the talk is under way: the fault's timing
        c.redis.pause()
        paused_at = time.monotonic()
        time.sleep(stopped)  # the fault itself
        c.redis.resume()
        time.sleep(1.0)  # the talk goes on after the fault
    finally:
        c.redis.resume()
        stop.set()
        for thread in threads:
            thread.join(seconds(lease + 10))
    for user in users:
        if user not in outcome:
            fail(f"{user.label}: its talk did not end")
        if outcome[user][1]:
            raise outcome[user][1]
    # Every line is settled: echoed to its sender, or refused.
    for user in users:
        sent = outcome[user][0]
        mine = set(sent)

        def settled():
            echoed = sum(1 for x in user.lines if x in mine)
            return echoed + user.lines.count(UNAVAILABLE) >= len(sent)
        user.wait(settled, lease + 5, f"an echo or a refusal for each of "
                  f"its {len(sent)} lines")
    users[0].say("the end")
    everyone_sees(users, b"%s: the end" % users[0].name)
    connected(users)
    delivered, refused = [], []
    for user in users:
        sent = outcome[user][0]
        lines = user.snapshot()
        echoed = [x for x in lines if x in set(sent)]
        refusals = lines.count(UNAVAILABLE)
        if len(echoed) + refusals != len(sent):
            fail(f"{user.label}: sent {len(sent)} lines, got {len(echoed)} "
                 f"echoes and {refusals} refusals" + user.context())
        delivered += [x for x in sent if x in set(echoed)]
        refused += [x for x in sent if x not in set(echoed)]
    for user in users:
        seen = collections.Counter(user.room_lines())
        for line in delivered:
            if seen[line] != 1:
                fail(f"{user.label}: {line!r} {seen[line]} times, expected "
                     f"once" + user.context())
        for line in refused:
            if seen[line]:
                fail(f"{user.label}: {line!r} arrived, although its sender "
                     f"never got it back (it got {UNAVAILABLE!r} instead)")
        if user.find(LOST) is not None:
            fail(f"{user.label}: {LOST!r} although Redis was back within "
                 f"the lease")
        for sender in users:
            said = [x for x in user.room_lines()
                    if x.startswith(sender.name + b": ")
                    and x != sender.name + b": the end"]
            if said != [x for x in outcome[sender][0] if x in set(said)]:
                fail(f"{user.label}: {sender.label}'s lines not in the order "
                     f"sent")
    check_same_order(users)
    log(f"  Redis stopped {stopped:.1f} s (lease {lease:g} s) "
        f"{time.monotonic() - paused_at:.1f} s ago: {len(delivered)} lines "
        f"delivered once to all {len(users)} users, {len(refused)} refused "
        f"with 'Room unavailable'")


@case
def redis_lost(c):
    """Redis killed: users stay; messages, names and NAMES get `Room
    unavailable` (a name then the prompt); HELP and QUIT work. Redis
    restarted empty: every user gets `Room connection lost` and is closed;
    new users are served again, across servers."""
    c.start_redis()
    nodes = [c.node(i) for i in range(len(set(c.binaries)) or 1)]
    if len(nodes) < 2:
        nodes.append(c.node(1))
    stay, leave, everyone = [], [], []
    for i, node in enumerate(nodes):
        stay.append(c.register(node, f"s{i}", everyone))
        everyone.append(stay[-1])
    for i, node in enumerate(nodes):
        leave.append(c.register(node, f"q{i}", everyone))
        everyone.append(leave[-1])
    naming = [c.connect(node, f"x{i}") for i, node in enumerate(nodes)]
    c.redis.kill()
    for user in stay:
        user.ask("during the outage", UNAVAILABLE, timeout=5)
        user.ask("NAMES", UNAVAILABLE, timeout=5)
        user.ask("HELP", HELP)
    for i, user in enumerate(naming):
        user.say(f"x{i}")
        user.expect(UNAVAILABLE, PROMPT, timeout=5)
    for user in leave:
        user.ask("QUIT", BYE, timeout=5)
        user.wait_eof()
    connected(stay)
    for user in naming:
        user.close()
    restarted = time.monotonic()
    c.redis.start()  # the same port, empty
    for user in stay:
        user.wait_line(LOST, timeout=10 + c.lease)
        user.wait_eof()
        if user.snapshot()[-1] != LOST:
            fail(f"{user.label}: {LOST!r} should be the last line"
                 + user.context())
    worst = max(u.time_of(LOST) for u in stay) - restarted
    log(f"  Redis restarted empty: every user had {LOST.decode()!r} within "
        f"{worst:.2f} s")
    fresh = []
    for i, node in enumerate(nodes):
        fresh.append(c.register(node, f"r{i}", fresh, retry_for=10))
    for user in fresh:
        user.say("we are back")
    for user in fresh:
        everyone_sees(fresh, b"%s: we are back" % user.name)
    check_same_order(fresh)


@case
def reuse_port(c):
    """--reuse-port: two servers on one port both start; users connecting
    to that port land on either and chat with each other."""
    c.start_redis()
    port = free_port()
    nodes = [c.node(i, port=port, extra=["--reuse-port"]) for i in range(2)]
    for node in nodes:
        if node.port != port:
            fail(f"{node}: runs on port {node.port}, asked {port}")
    landed = {node: [] for node in nodes}
    users = []
    for number in range(64):
        user = c.register(nodes[0], f"r{number}", users)  # node: port only
        users.append(user)
        inode = socket_inode(port, user.local_port)
        owner = [n for n in nodes if inode and holds_socket(owner_pids(n),
                                                            inode)]
        if len(owner) != 1:
            fail(f"{user.label}: its connection is held by {owner} "
                 f"(socket inode {inode})")
        landed[owner[0]].append(user)
        user.label = f"{user.name.decode()}@{owner[0]}"
        if all(len(v) >= 2 for v in landed.values()):
            break
    else:
        fail(f"64 connections to port {port}: "
             f"{[(str(n), len(v)) for n, v in landed.items()]}")
    for node, mine in landed.items():
        mine[0].say(f"hello from {node}")
    for node, mine in landed.items():
        everyone_sees(users, b"%s: hello from %s" % (mine[0].name,
                                                     str(node).encode()))
    check_same_order(users)
    log(f"  port {port}: " + ", ".join(f"{len(v)} users on {n}"
                                       for n, v in landed.items()))


class Netns:
    """A network namespace joined to the host by two veth pairs: one
    carries Redis (and is cut), one carries the clients (and is not)."""

    def __init__(self):
        pid = os.getpid()
        self.name = f"c10kcl-{pid}"
        block = (pid % 16384) * 4  # 198.18.0.0/15, RFC 2544's range

        def address(second, offset):
            value = (198 << 24) | (second << 16) | (block + offset)
            return socket.inet_ntoa(value.to_bytes(4, "big"))
        self.redis_host, self.redis_ns = address(18, 1), address(18, 2)
        self.client_host, self.client_ns = address(19, 1), address(19, 2)
        self.links = {"r": (f"c10kr{pid}h", f"c10kr{pid}n"),
                      "c": (f"c10kc{pid}h", f"c10kc{pid}n")}
        self.created = False

    def ip(self, *args, inside=False, check=True):
        command = ["ip"] + (["netns", "exec", self.name, "ip"]
                            if inside else []) + list(args)
        done = subprocess.run(command, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=20)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: "
                               f"{done.stderr.decode().strip()}")
        return done

    @staticmethod
    def remove_stale():
        """Namespaces of earlier runs that were killed before cleanup."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                 timeout=20).stdout.decode()
        for line in listing.splitlines():
            match = re.match(r"c10kcl-(\d+)\b", line)
            if match and not os.path.exists(f"/proc/{match.group(1)}"):
                subprocess.run(["ip", "netns", "del", match.group(0)],
                               capture_output=True, timeout=20)

    def create(self):
        self.ip("netns", "add", self.name)
        self.created = True
        LIVE.add(self)
        self.ip("link", "set", "lo", "up", inside=True)
        for key, host_address, ns_address in (
                ("r", self.redis_host, self.redis_ns),
                ("c", self.client_host, self.client_ns)):
            host_side, ns_side = self.links[key]
            self.ip("link", "add", host_side, "type", "veth",
                    "peer", "name", ns_side)
            self.ip("link", "set", ns_side, "netns", self.name)
            self.ip("addr", "add", f"{host_address}/30", "dev", host_side)
            self.ip("link", "set", host_side, "up")
            self.ip("addr", "add", f"{ns_address}/30", "dev", ns_side,
                    inside=True)
            self.ip("link", "set", ns_side, "up", inside=True)

    def reach(self, host, port, timeout):
        """Until a TCP connect from inside the namespace succeeds."""
        probe = ("import socket,sys\n"
                 "socket.create_connection((sys.argv[1], int(sys.argv[2])),"
                 " 1).close()\n")
        deadline = time.monotonic() + seconds(timeout)
        while True:
            done = subprocess.run(["ip", "netns", "exec", self.name,
                                   sys.executable, "-c", probe, host,
                                   str(port)], capture_output=True,
                                  timeout=20)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                fail(f"no connection from namespace {self.name} to "
                     f"{host}:{port}: {done.stderr.decode()[-300:]}")
            time.sleep(0.1)  # polled, with a deadline

    def cut(self):
        self.ip("link", "set", self.links["r"][1], "down", inside=True)

    def heal(self):
        self.ip("link", "set", self.links["r"][1], "up", inside=True)

    def cleanup(self):
        if self.created:
            self.ip("netns", "del", self.name, check=False)
            for host_side, _ in self.links.values():
                self.ip("link", "del", host_side, check=False)
            self.created = False
        LIVE.discard(self)


@case
def partition(c):
    """A server cut off from Redis (its link down) while it keeps its
    clients: the other servers retire its users within the lease; its own
    users get `Room connection lost` once the lease has passed. Then the
    link comes back and it serves new users. One server of each model in
    the namespace, two on the host."""
    skip = Skip("partition needs root and network namespaces")
    if os.geteuid() != 0 or not shutil.which("ip"):
        raise skip
    try:
        Netns.remove_stale()
        ns = Netns()
        c.after_finish.append(ns.cleanup)
        ns.create()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log(f"  ({error})")
        raise skip
    c.start_redis(binds=("127.0.0.1", ns.redis_host))
    ns.reach(ns.redis_host, c.redis.port, timeout=10)
    inside_url = c.redis.url_for(ns.redis_host)
    prefix = ["ip", "netns", "exec", ns.name]
    outside = [c.node(0), c.node(len(c.binaries) - 1 or 1)]
    inside = [c.node(i, host=ns.client_ns, prefix=prefix, redis_url=inside_url)
              for i in range(len(set(c.binaries)))]
    c.before_finish.append(ns.heal)
    everyone, watchers, cut_off = [], [], []
    for i, node in enumerate(outside):
        watchers.append(c.register(node, f"h{i}", everyone))
        everyone.append(watchers[-1])
    for i, node in enumerate(inside):
        cut_off.append(c.register(node, f"n{i}", everyone))
        everyone.append(cut_off[-1])
    cut_off[0].say("before the cut")
    everyone_sees(everyone, b"n0: before the cut")
    ns.cut()
    cut_at = time.monotonic()
    for user in cut_off:  # still served
        user.ask("HELP", HELP)
    bound = c.lease + seconds(0.5)
    for user in cut_off:
        for watcher in watchers:
            watcher.wait_line(departed(user.name), timeout=c.lease + 10)
            took = watcher.time_of(departed(user.name)) - cut_at
            if took > bound:
                fail(f"{watcher.label}: {departed(user.name)!r} "
                     f"{took:.2f} s after the cut, expected within the lease"
                     f" ({c.lease:g} s + {seconds(0.5):.1f} s)")
    retired = max(w.time_of(departed(u.name)) for u in cut_off
                  for w in watchers) - cut_at
    log(f"  cut: the other servers retired the {len(cut_off)} cut-off users "
        f"within {retired:.2f} s (lease {c.lease:g} s)")
    for user in cut_off:
        user.wait_line(LOST, timeout=c.lease + 10)
        user.wait_eof()
        took = user.time_of(LOST) - cut_at
        if took < c.lease / 2:
            fail(f"{user.label}: {LOST!r} {took:.2f} s after the cut: users "
                 f"must stay connected until the lease has passed")
        if took > c.lease + seconds(1):
            fail(f"{user.label}: {LOST!r} only {took:.2f} s after the cut, "
                 f"expected once the lease ({c.lease:g} s) has passed "
                 f"(+ {seconds(1):g} s)")
        if user.snapshot()[-1] != LOST:
            fail(f"{user.label}: {LOST!r} should be the last line"
                 + user.context())
        log(f"  {user.label}: {LOST.decode()!r} {took:.2f} s after the cut")
    ns.heal()
    fresh = []
    for i, node in enumerate(inside):
        fresh.append(c.register(node, f"b{i}", watchers + fresh,
                                retry_for=15 + c.lease))
    fresh[-1].say("healed")
    everyone_sees(watchers + fresh, b"%s: healed" % fresh[-1].name)
    check_exactly_once(watchers, [departed(u.name) for u in cut_off],
                       "departures of the cut-off users")
    check_same_order(watchers + fresh)


# -- running -------------------------------------------------------------------

def cleanup_everything():
    for thing in list(LIVE):
        try:
            thing.cleanup()
        except Exception:  # noqa: BLE001 (best effort at exit)
            pass


def on_signal(signum, _frame):
    cleanup_everything()
    sys.exit(128 + signum)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", required=False, default="",
                        help="comma-separated server binaries")
    parser.add_argument("--only", action="append", default=[],
                        help="comma-separated case names (see --list)")
    parser.add_argument("--list", action="store_true",
                        help="list the cases and exit")
    parser.add_argument("--lease", type=float, default=2.0,
                        help="the servers' --lease, before scaling (2)")
    options = parser.parse_args()
    names = [function.__name__ for function in CASES]
    if options.list:
        for function in CASES:
            print(f"{function.__name__:12} {function.__doc__.split(chr(10))[0]}")
        return 0
    binaries = [os.path.abspath(b) for b in options.servers.split(",") if b]
    if not binaries:
        parser.error("--servers: at least one server binary")
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            parser.error(f"no such server binary: {binary}")
    selected = [name for group in options.only for name in group.split(",")
                if name]
    unknown = [name for name in selected if name not in names]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases: {', '.join(names)}")
    if REDIS_SERVER is None:
        print("skipped: redis-server not found", flush=True)
        return 77
    atexit.register(cleanup_everything)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lease = seconds(options.lease)
    log(f"servers: {', '.join(model_of(b) for b in binaries)}\n"
        f"time factor {TIME_FACTOR:g}, lease {lease:g} s\n")
    results = []
    began = time.monotonic()
    for function in CASES:
        if selected and function.__name__ not in selected:
            continue
        name = function.__name__
        log(f"{name}: {function.__doc__.split(chr(10))[0]}")
        fixture = Case(binaries, lease)
        started = time.monotonic()
        outcome, detail = "ok", ""
        try:
            function(fixture)
        except Skip as reason:
            outcome, detail = "skipped", str(reason)
        except AssertionError as error:
            outcome, detail = "FAILED", str(error)
        except Exception as error:  # noqa: BLE001 (a broken harness: say so)
            outcome, detail = "FAILED", f"{type(error).__name__}: {error}"
        finally:
            logs = fixture.logs() if outcome == "FAILED" else ""
            problems = fixture.finish()
        if problems and outcome != "FAILED":
            outcome, detail = "FAILED", "teardown: " + "\n".join(problems)
        elif problems:
            detail += "\n  teardown: " + "\n".join(problems)
        took = time.monotonic() - started
        results.append((name, outcome, took))
        if outcome == "skipped":
            log(f"{name}: skipped: {detail} ({took:.1f} s)\n")
        elif outcome == "ok":
            log(f"{name}: ok ({took:.1f} s)\n")
        else:
            log(f"{name}: FAILED ({took:.1f} s)\n  {detail}{logs}\n")
    passed = sum(1 for _, outcome, _ in results if outcome == "ok")
    failed = [name for name, outcome, _ in results if outcome == "FAILED"]
    skipped = sum(1 for _, outcome, _ in results if outcome == "skipped")
    log(f"{passed} passed, {len(failed)} failed, {skipped} skipped "
        f"in {time.monotonic() - began:.1f} s"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
