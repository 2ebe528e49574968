#!/usr/bin/env python3
"""Black-box conformance suite for every chat server model (docs/PROTOCOL.md).

Usage:
    python3 conformance.py SERVER [-j JOBS] [-k PATTERN] [TEST ...]

SERVER is a server binary (build/bin/chat-evented, -threaded, -forking) or
a Python script (bench/peers/chat_asyncio.py, run with this interpreter).
TEST names a class or a test (`Telnet`, `Telnet.test_do_is_refused`); -k
selects tests whose name contains PATTERN, as in unittest.

Each test starts its own server on a free loopback port, talks to it as
telnet or nc would, then stops it with SIGTERM. The server must then exit 0
within 2 seconds, leave no process of its group behind, and its standard
error must hold no sanitizer report. Tests run in parallel (-j).

Every wait is "until the expected bytes arrive, or fail at the deadline
showing what did arrive"; nothing sleeps and hopes. When a test must show
that something does NOT arrive, it makes something later happen that must
arrive after it, and checks that nothing else came first.

Environment: CONFORMANCE_TIME_FACTOR (default 1) stretches every deadline,
for sanitizer builds.

--redis (docs/PROTOCOL.md section 7): every server the suite starts gets a
redis-server of its own (a unix socket in a fresh temporary folder, no
persistence, a child of the suite that dies with it) and runs with
`--redis unix:PATH --lease 2` appended; that Redis stops when the server's
test is done. The commands run to completion (--help, bad arguments...)
get `--redis unix:PATH --lease 2` in front of their arguments, PATH a
socket where nothing listens (they must exit before they need Redis), or
the running server's Redis for the port-in-use check. Exit status 77 when
redis-server is not installed.

Standard library only (Python 3.8+).
"""

import argparse
import concurrent.futures
import datetime
import fcntl
import io
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from server_process import (alive, descendants, group_members,  # noqa: E402
                            sanitizer_report)

TIME_FACTOR = float(os.environ.get("CONFORMANCE_TIME_FACTOR") or 1)
SERVER = None  # the server under test, set by main()
LIVE_SERVERS = set()  # killed if the suite is interrupted
REDIS_MODE = False  # --redis: every server gets a Redis of its own
REDIS_LEASE = "2"  # the --lease given with --redis
LIVE_REDIS = set()  # redis-servers to kill if the suite is interrupted
REDIS_SERVER = shutil.which("redis-server")
# As tests/cluster/cluster.py does: setpriv makes a redis-server die with
# the suite even when the suite is killed (a CTest timeout). The parent
# death signal follows the *thread* that started it: a Redis is started
# only from the threads that run tests, which live as long as the run.
SETPRIV = shutil.which("setpriv")
DIE_WITH_US = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []

# The fixed texts of docs/PROTOCOL.md, as bytes on the wire.
EOL = b"\r\n"
PROMPT = b"Enter user name: "
INVALID_NAME = (b"Invalid user name: use 1-32 characters, no spaces, colons "
                b"or control characters\r\n")
INVALID_UTF8 = b"Line ignored: invalid UTF-8\r\n"
CONTROL = b"Line ignored: control characters are not allowed\r\n"
HELP = (b"Commands: NAMES lists who is here, QUIT leaves, anything else is "
        b"sent to everyone\r\n")
BYE = b"Bye.\r\n"
SERVER_FULL = b"Server full, try again later\r\n"
TIMED_OUT = b"Timed out waiting for a user name\r\n"
SHUTTING_DOWN = b"Server shutting down\r\n"

# The control characters beyond ASCII's (§4): every C1 control and every
# bidirectional override and isolate.
C1_AND_BIDI = ([chr(c) for c in range(0x80, 0xA0)]
               + [chr(c) for c in range(0x202A, 0x202F)]
               + [chr(c) for c in range(0x2066, 0x206A)])

# Telnet bytes (RFC 854).
IAC, DONT, DO, WONT, WILL, SB = 255, 254, 253, 252, 251, 250
SE, NOP, DM, IP, AYT, EC, EL, GA = 240, 241, 242, 244, 246, 247, 248, 249


def seconds(value):
    """A deadline in seconds, stretched by CONFORMANCE_TIME_FACTOR."""
    return value * TIME_FACTOR


def as_bytes(text):
    return text.encode("utf-8") if isinstance(text, str) else text


def lines(*texts):
    """The wire form of server lines: each text followed by CR LF."""
    return b"".join(as_bytes(text) + EOL for text in texts)


def too_long(limit):
    return b"Line ignored: longer than %d bytes\r\n" % limit


def telnet(*codes):
    return bytes(codes)


def server_command(args):
    if SERVER.endswith(".py"):
        return [sys.executable, SERVER] + list(args)
    return [SERVER] + list(args)


def is_sanitized(path):
    """True for a binary built with ASan or TSan (their runtimes' entry
    points are named in it, linked statically or not)."""
    if path.endswith(".py"):
        return False
    with open(path, "rb") as binary:
        content = binary.read()
    return b"__asan_init" in content or b"__tsan_init" in content


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def shared_memory(pids):
    """Named shared memory the processes use: /dev/shm files they map,
    System V segments they created."""
    paths, segments = set(), set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    if "/dev/shm/" in line and "(deleted)" not in line:
                        paths.add(line[line.index("/dev/shm/"):].strip())
        except OSError:
            pass
    try:
        with open("/proc/sysvipc/shm") as table:
            next(table)
            for line in table:
                fields = line.split()
                if int(fields[4]) in pids:  # cpid
                    segments.add(int(fields[1]))
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return paths, segments


def system_v_segments():
    try:
        with open("/proc/sysvipc/shm") as table:
            next(table)
            return {int(line.split()[1]) for line in table if line.strip()}
    except (OSError, StopIteration):
        return set()


def send_queue(local_port, remote_port):
    """Bytes in the send queue of the IPv4 TCP socket between these ports
    (from /proc/net/tcp), or None."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local = int(fields[1].split(":")[1], 16)
            remote = int(fields[2].split(":")[1], 16)
            if (local, remote) == (local_port, remote_port):
                return int(fields[4].split(":")[0], 16)
    return None


def resident_memory(pid):
    """VmRSS of a process and all its descendants, in bytes."""
    total = 0
    for member in descendants(pid) | {pid}:
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Redis:
    """With --redis: a redis-server of the suite's own for one chat server,
    listening on a unix socket only (--port 0) in a fresh temporary folder,
    without persistence, in its own session (so neither in the chat
    server's process group nor among its descendants: the teardown's
    process checks never see it). Started and answering PING on return."""

    def __init__(self, timeout=10.0):
        self.dir = tempfile.mkdtemp(prefix="c10k-conformance-redis-")
        self.path = os.path.join(self.dir, "redis.sock")
        self.log = tempfile.TemporaryFile()
        self.process = None
        LIVE_REDIS.add(self)
        try:
            if len(self.path.encode()) > 107:  # sun_path
                raise AssertionError(f"socket path too long for a unix "
                                     f"socket: {self.path} (set TMPDIR)")
            self.process = subprocess.Popen(
                DIE_WITH_US + [REDIS_SERVER, "--port", "0",
                               "--unixsocket", self.path,
                               "--unixsocketperm", "700",
                               "--save", "", "--appendonly", "no",
                               "--daemonize", "no", "--dir", self.dir],
                stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_answers(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        return f"unix:{self.path}"

    def _wait_answers(self, timeout):
        deadline = time.monotonic() + seconds(timeout)
        for _ in range(100000):  # bounded: every pass takes a little time
            status = self.process.poll()
            if status is not None:
                raise AssertionError(
                    f"redis-server exited with status {status} before it "
                    f"answered PING; its log: {self.log_text()[-1500:]}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)  # polled, with a deadline
        raise AssertionError(
            f"redis-server did not answer PING on {self.path} within "
            f"{seconds(timeout):.1f} s; its log: {self.log_text()[-1500:]}")

    def _answers_ping(self):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(self.path)
                probe.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n") and len(reply) < 1024:
                    chunk = probe.recv(1024)
                    if not chunk:
                        break
                    reply += chunk
                return reply == b"+PONG\r\n"
        except OSError:
            return False

    def log_text(self):
        try:
            self.log.seek(0)
            return self.log.read().decode("utf-8", "replace")
        except ValueError:  # closed
            return ""

    def kill(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass
        self.process.wait()

    def stop(self):
        """Kills it (it has nothing to save) and removes its folder; a
        problem if it had died during the test, else None."""
        problem = None
        if self.process is not None:
            status = self.process.poll()
            if status is not None:
                problem = (f"the suite's redis-server exited during the "
                           f"test (status {status}); its log: "
                           f"{self.log_text()[-1500:]}")
        self.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        LIVE_REDIS.discard(self)
        return problem


class Server:
    """One server process. Its stderr goes to a temporary file or, with
    stderr_pipe, to a pipe that nobody reads until read_stderr_pipe()."""

    def __init__(self, args, room=b"ChatServer", prefix=(),
                 stderr_pipe=False):
        self.redis = None
        if REDIS_MODE:  # a Redis of its own, stopped by finish()
            self.redis = Redis()
            args = list(args) + ["--redis", self.redis.url,
                                 "--lease", REDIS_LEASE]
        self.args = list(args)
        self.room = as_bytes(room)
        self.clients = []
        self.port = None
        self.status = None
        self.stop_elapsed = None  # seconds from the signal to the exit
        self.stderr = tempfile.TemporaryFile()
        self.stderr_pipe = None  # the reading end, when stderr is a pipe
        self.before_stop = (set(), set(), set())  # processes, shm files, ids
        writing_end = None
        if stderr_pipe:
            self.stderr_pipe, writing_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                list(prefix) + server_command(self.args),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=writing_end if stderr_pipe else self.stderr,
                start_new_session=True)  # its own process group, for cleanup
        except BaseException:
            if self.redis is not None:
                self.redis.stop()
            raise
        if writing_end is not None:
            os.close(writing_end)
        self.pid = self.process.pid
        LIVE_SERVERS.add(self)

    def stderr_pipe_size(self):
        """Bytes waiting in the stderr pipe (FIONREAD)."""
        return struct.unpack("i", fcntl.ioctl(self.stderr_pipe,
                                              termios.FIONREAD,
                                              b"\0" * 4))[0]

    def read_stderr_pipe(self):
        """Reads what waits in the stderr pipe, without waiting; keeps it
        where stderr_text() finds it."""
        if self.stderr_pipe is None:
            return b""
        os.set_blocking(self.stderr_pipe, False)
        taken = b""
        for _ in range(100000):  # bounded: 64 KiB a read, at most
            try:
                chunk = os.read(self.stderr_pipe, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            taken += chunk
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.write(taken)
        self.stderr.flush()
        return taken

    def wait_started(self, timeout=60.0):
        """Reads the startup line `NAME running on port PORT`."""
        deadline = time.monotonic() + seconds(timeout)
        out = self.process.stdout.fileno()
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no startup line within {seconds(timeout):.1f} s; "
                    f"stdout: {data!r}; stderr: {self.stderr_text()[-2000:]}")
            ready, _, _ = select.select([out], [], [], remaining)
            if ready:
                chunk = os.read(out, 4096)
                if not chunk:
                    status = self.process.wait()
                    raise AssertionError(
                        f"server exited with status {status} before its "
                        f"startup line; stdout: {data!r}; stderr: "
                        f"{self.stderr_text()[-2000:]}")
                data += chunk
        first = data.split(b"\n", 1)[0]
        match = re.fullmatch(rb"(.*) running on port ([0-9]+)", first, re.S)
        if not match or match.group(1) != self.room:
            raise AssertionError(
                f"startup line {first!r}, expected "
                f"{self.room + b' running on port PORT'!r}")
        self.port = int(match.group(2))
        if not 0 < self.port < 65536:
            raise AssertionError(f"startup line names port {self.port}")
        return self

    def stderr_text(self):
        """What the server wrote on stderr so far (offset left alone)."""
        self.read_stderr_pipe()
        chunks, offset = [], 0
        fd = self.stderr.fileno()
        while True:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def stop(self, signum=signal.SIGTERM, within=2.0):
        """Sends a signal; returns the exit status. The server must exit
        within `within` seconds (scaled), else it is killed and this fails."""
        if self.status is not None:
            return self.status
        below = descendants(self.pid)
        self.before_stop = (below,) + shared_memory(below | {self.pid})
        signalled = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.status = self.process.wait(seconds(within))
            self.stop_elapsed = time.monotonic() - signalled
        except subprocess.TimeoutExpired:
            self.kill()
            self.status = self.process.wait()
            raise AssertionError(
                f"server still running {seconds(within):.1f} s after "
                f"{signal.Signals(signum).name}; killed")
        return self.status

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def finish(self):
        """Stops the server if needed and lists what went wrong; then stops
        its Redis (--redis), whatever happened."""
        problem = None
        try:
            problems = self._finish()
        finally:
            if self.redis is not None:
                problem = self.redis.stop()
        if problem:
            problems.append(problem)
        return problems

    def _finish(self):
        problems = []
        if self.status is None:
            try:
                self.stop(signal.SIGTERM)
            except AssertionError as error:
                problems.append(str(error))
        if self.status != 0:
            problems.append(f"exit status {self.status} (expected 0 after "
                            f"SIGTERM; negative: killed by that signal)")
        below, paths, segments = self.before_stop

        def survivors():
            return sorted(set(group_members(self.pid))
                          | {pid for pid in below if alive(pid)})
        deadline = time.monotonic() + seconds(1.0)
        while survivors() and time.monotonic() < deadline:
            time.sleep(0.01)
        if survivors():
            problems.append(f"processes of the server outlived it: "
                            f"{survivors()}")
            self.kill()
            for pid in survivors():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        left = sorted(path for path in paths if os.path.exists(path))
        left += sorted(segments & system_v_segments())
        if left:
            problems.append(f"shared memory outlived the server: {left}")
        report = sanitizer_report(self.stderr_text())
        if report:
            problems.append("sanitizer report on stderr:\n" + report)
        for client in self.clients:
            client.close()
        LIVE_SERVERS.discard(self)
        self.process.stdout.close()
        self.stderr.close()
        if self.stderr_pipe is not None:
            os.close(self.stderr_pipe)
        return problems


class Client:
    """One TCP connection to the server, read with deadlines."""

    def __init__(self, port, label, host="127.0.0.1", rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.label = label
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(seconds(10))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.buffer = bytearray()
        self.consumed = b""  # the last bytes taken out, to explain failures
        self.eof = False
        self.reset = False
        self.sent_iac = False
        self.closed = False

    # -- sending -------------------------------------------------------------

    def send(self, data):
        data = as_bytes(data)
        if IAC in data:
            self.sent_iac = True
        self.sock.settimeout(seconds(10))
        self.sock.sendall(data)

    def send_bytewise(self, data, pause=0.002):
        """One byte per send() and (with TCP_NODELAY) per packet; the pause
        only makes separate reads likely, no result depends on it."""
        for byte in as_bytes(data):
            self.send(bytes([byte]))
            time.sleep(pause)

    def sync(self, option=1):
        """Proves the server has read everything sent so far: IAC DO x must
        be answered IAC WONT x, and only after the bytes before it."""
        self.send(telnet(IAC, DO, option))
        self.expect(telnet(IAC, WONT, option), what=" (telnet refusal)")

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()

    def close_with_reset(self):
        """Closes with SO_LINGER 0: the server sees a TCP reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.close()

    # -- receiving -----------------------------------------------------------

    def _fill(self, deadline):
        """Receives once; False when the deadline passed first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.eof = self.reset = True
            return True
        if not chunk:
            self.eof = True
            return True
        if IAC in chunk and not self.sent_iac:
            raise AssertionError(
                f"{self.label}: received byte 0xFF (IAC) although it never "
                f"sent one: {chunk[:200]!r}")
        self.buffer += chunk
        return True

    def _take(self, count):
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        self.consumed = (self.consumed + taken)[-300:]
        return taken

    def _failure(self, expected, reason):
        return AssertionError(
            f"{self.label}: expected {expected!r}, {reason}.\n"
            f"  received: {bytes(self.buffer[:400])!r}"
            f"{' + EOF' if self.eof else ''}\n"
            f"  after:    ...{self.consumed[-160:]!r}")

    def expect(self, expected, timeout=10.0, what=""):
        """The next bytes received must be exactly `expected`."""
        expected = as_bytes(expected)
        deadline = time.monotonic() + seconds(timeout)
        while True:
            have = bytes(self.buffer[:len(expected)])
            if have != expected[:len(have)]:
                raise self._failure(expected, "other bytes arrived" + what)
            if len(have) == len(expected):
                return self._take(len(expected))
            if self.eof:
                raise self._failure(expected, "the connection was closed"
                                    + what)
            if not self._fill(deadline):
                raise self._failure(
                    expected, f"nothing more within "
                    f"{seconds(timeout):.1f} s{what}")

    def expect_lines(self, *texts, timeout=10.0):
        """The next bytes are exactly these lines, each ending CR LF."""
        return self.expect(lines(*texts), timeout)

    def expect_one_of(self, choices, timeout=10.0):
        """The next bytes are exactly one of `choices`; returns it."""
        deadline = time.monotonic() + seconds(timeout)
        while True:
            have = bytes(self.buffer)
            for choice in choices:
                if have[:len(choice)] == choice:
                    return self._take(len(choice))
            if not any(choice.startswith(have[:len(choice)])
                       for choice in choices):
                raise self._failure(choices, "other bytes arrived")
            if self.eof or not self._fill(deadline):
                raise self._failure(choices, "not received")

    def read_line(self, timeout=10.0):
        """The next line, without its CR LF."""
        return self._line(time.monotonic() + seconds(timeout))

    def _line(self, deadline):
        while EOL not in self.buffer:
            if self.eof or not self._fill(deadline):
                raise self._failure(b"a line ending CR LF", "not received")
        end = self.buffer.index(EOL)
        return self._take(end + 2)[:-2]

    def read_lines_until(self, last, timeout=10.0, limit=1000000):
        """Lines up to and including the line `last`."""
        last = as_bytes(last)
        deadline = time.monotonic() + seconds(timeout)
        received = []
        while len(received) < limit:
            received.append(self._line(deadline))
            if received[-1] == last:
                return received
        raise self._failure(last, f"not within {limit} lines")

    def expect_eof(self, timeout=10.0):
        """Nothing more arrives: the server closes the connection."""
        deadline = time.monotonic() + seconds(timeout)
        while not self.eof:
            if self.buffer:
                break
            if not self._fill(deadline):
                raise self._failure(b"", "the connection is still open")
        if self.buffer:
            raise self._failure(b"", "expected the connection to close")

    def drain_until_closed(self, timeout=10.0, limit=256 << 20):
        """Reads and discards until the server closes; returns the count."""
        deadline = time.monotonic() + seconds(timeout)
        total = 0
        while not self.eof:
            if total > limit or not self._fill(deadline):
                raise self._failure(b"", f"the connection is still open "
                                    f"after {total} bytes")
            total += len(self.buffer)
            self.buffer.clear()
        return total

    def expect_silence(self, duration):
        """Nothing arrives during `duration` seconds (not scaled)."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            if self._fill(deadline) and (self.buffer or self.eof):
                raise self._failure(b"", f"expected silence for {duration} s")


def run_parallel(*functions):
    """Runs the functions in threads; re-raises the first exception."""
    with concurrent.futures.ThreadPoolExecutor(len(functions)) as pool:
        futures = [pool.submit(function) for function in functions]
        return [future.result() for future in futures]


def cost(estimate):
    """Marks a test's expected run time, so the longest start first."""
    def mark(function):
        function.cost = estimate
        return function
    return mark


class ChatTest(unittest.TestCase):
    """Fixture: servers that are checked at teardown, and clients."""

    maxDiff = 4000

    def start(self, *options, room=None, host="127.0.0.1", quiet=False,
              prefix=(), stderr_pipe=False):
        """A fresh server on a free port with these options (run through
        `prefix`, a command that execs the rest)."""
        args = []
        if room is not None:
            args += ["-n", room]
        args += ["-p", "0"]
        if host:
            args += ["-H", host]
        if quiet:
            args.append("-q")
        args += list(options)
        server = Server(args, room if room is not None else b"ChatServer",
                        prefix=prefix, stderr_pipe=stderr_pipe)
        self.addCleanup(self._finish, server)
        return server.wait_started()

    def _finish(self, server):
        problems = server.finish()
        if problems:
            self.fail("server teardown: " + "\n".join(problems))

    def assertSameSequence(self, first, second, what):
        """Two lists of lines are equal; else show where they part."""
        if first == second:
            return
        at = next((i for i, (a, b) in enumerate(zip(first, second))
                   if a != b), min(len(first), len(second)))
        self.fail(f"{what}: the sequences part at line {at} "
                  f"(lengths {len(first)}, {len(second)}):\n"
                  f"  {[line[:60] for line in first[max(0, at - 2):at + 3]]}\n"
                  f"  {[line[:60] for line in second[max(0, at - 2):at + 3]]}")

    def connect(self, server, label, host="127.0.0.1", rcvbuf=None):
        client = Client(server.port, label, host, rcvbuf)
        server.clients.append(client)
        return client

    def welcome(self, server):
        return b"Welcome to " + server.room + EOL + PROMPT

    def connected(self, server, label, **options):
        """A client that received the welcome and the prompt."""
        client = self.connect(server, label, **options)
        client.expect(self.welcome(server), what=" (welcome and prompt)")
        return client

    def arrive(self, server, name, members=(), **options):
        """A new registered user; the members see the arrival too."""
        client = self.connected(server, name, **options)
        client.send(as_bytes(name) + b"\n")
        arrival = lines(b"User " + as_bytes(name) + b" arrived.")
        client.expect(arrival)
        for member in members:
            member.expect(arrival)
        return client

    def room(self, server, *names):
        """Registers users in order; everyone sees every later arrival."""
        members = []
        for name in names:
            members.append(self.arrive(server, name, members))
        return members

    def connect_when_free(self, server, label, timeout=10.0):
        """Connects until the server has a free slot (a slot is freed a
        little after a client leaves); returns the welcomed client."""
        deadline = time.monotonic() + seconds(timeout)
        for _ in range(200):
            client = self.connect(server, label)
            answer = client.expect_one_of([self.welcome(server),
                                           SERVER_FULL])
            if answer != SERVER_FULL:
                return client
            client.expect_eof()
            client.close()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.fail("no free slot within the deadline")

    def run_command(self, *args, timeout=60.0, redis=None):
        """Runs the server binary to completion; (status, stdout, stderr).
        With --redis, `--redis unix:PATH --lease 2` come first (the
        arguments under test stay last, `--port` without its value
        included): PATH is `redis`'s socket (a running server's Redis),
        or else one where nothing listens, as these commands must end
        before they need Redis."""
        nowhere = None
        if REDIS_MODE:
            if redis is not None:
                url = redis.url
            else:
                nowhere = tempfile.mkdtemp(prefix="c10k-conformance-")
                url = "unix:" + os.path.join(nowhere, "no-redis.sock")
            args = ("--redis", url, "--lease", REDIS_LEASE) + tuple(args)
        with tempfile.TemporaryFile() as err:
            try:
                done = subprocess.run(
                    server_command(args), stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=err,
                    timeout=seconds(timeout))
            except subprocess.TimeoutExpired:
                self.fail(f"{args!r}: still running after "
                          f"{seconds(timeout):.1f} s")
            finally:
                if nowhere is not None:
                    shutil.rmtree(nowhere, ignore_errors=True)
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        report = sanitizer_report(stderr)
        if report:
            self.fail(f"{args!r}: sanitizer report:\n{report}")
        return done.returncode, done.stdout.decode("utf-8", "replace"), stderr

    def run_commands(self, argument_lists):
        """run_command for each list of arguments, at once; the results in
        the same order."""
        return run_parallel(*(lambda args=args: self.run_command(*args)
                              for args in argument_lists))


# -----------------------------------------------------------------------------
# SPEC section 3: session
# -----------------------------------------------------------------------------

class Session(ChatTest):

    def test_welcome_and_prompt_exact(self):
        """§3.1: on connect, `Welcome to NAME` CR LF, then the prompt with no
        line end; nothing else until a name is sent."""
        server = self.start()
        client = self.connect(server, "ada")
        client.expect(b"Welcome to ChatServer\r\nEnter user name: ")
        client.send(b"ada\n")
        client.expect(b"User ada arrived.\r\n")

    def test_room_name_in_welcome(self):
        """§1/§3.1: the room NAME (UTF-8, spaces allowed) in the startup
        line and in the welcome."""
        server = self.start(room="Café ☕ Room")
        client = self.connect(server, "ada")
        client.expect("Welcome to Café ☕ Room\r\nEnter user name: ")

    def test_name_trimmed(self):
        """§3.2: the name is the line minus leading and trailing spaces and
        tabs."""
        server = self.start()
        client = self.connected(server, "ada")
        client.send(b" \t ada\t  \r\n")
        client.expect_lines("User ada arrived.")
        client.send(b"NAMES\n")
        client.expect_lines("Users here:", " ada")

    def test_name_length_in_code_points(self):
        """§3.2: 1 to 32 code points: 32 two-byte or four-byte characters
        are accepted, 33 are not; the prompt follows every refusal."""
        server = self.start()
        client = self.connected(server, "n")
        for name in ("a" * 33, "é" * 33, "😀" * 33):
            client.send(name + "\n")
            client.expect(INVALID_NAME + PROMPT)
        client.send("é" * 32 + "\n")
        client.expect_lines("User " + "é" * 32 + " arrived.")
        other = self.connected(server, "m")
        other.send("😀" * 32 + "\r\n")
        other.expect_lines("User " + "😀" * 32 + " arrived.")
        client.expect_lines("User " + "😀" * 32 + " arrived.")
        third = self.connected(server, "a32")
        third.send("a" * 32 + "\n")
        third.expect_lines("User " + "a" * 32 + " arrived.")

    def test_invalid_names(self):
        """§3.2: no space, colon or control character (TAB inside); an
        empty or blank line is an invalid name too (project decision);
        exact message, then the prompt again."""
        server = self.start()
        client = self.connected(server, "n")
        for bad in (b"a b", b"a:b", b":", b"ada:", b"a\tb", b"", b"   ",
                    b" \t "):
            client.send(bad + b"\n")
            client.expect(INVALID_NAME + PROMPT, what=f" (for {bad!r})")
        client.send(b"ok\n")
        client.expect_lines("User ok arrived.")

    def test_bad_input_notices_while_naming(self):
        """§3.2/§4: the too-long and invalid-UTF-8 notices apply while
        naming, each followed by the prompt; a control character in a name
        breaks the name rule (the control notice is for messages)."""
        server = self.start("--max-line", "16")
        client = self.connected(server, "n")
        client.send(b"a" * 17 + b"\n")
        client.expect(too_long(16) + PROMPT)
        for bad in (b"\xc3\x28", b"ad\xfea", b"\xed\xa0\x80x"):
            client.send(bad + b"\n")
            client.expect(INVALID_UTF8 + PROMPT, what=f" (for {bad!r})")
        for bad in (b"a\x1bb", b"\x1b[2J", b"a\x7f", b"a\x01", b"a\rb",
                    b"a\x00b"):
            client.send(bad + b"\n")
            client.expect(INVALID_NAME + PROMPT, what=f" (for {bad!r})")
        client.send(b"ok\n")
        client.expect_lines("User ok arrived.")

    def test_c1_and_bidi_controls_in_names(self):
        """§3.2/§4: the C1 controls (U+0080 to U+009F) and the
        bidirectional overrides and isolates (U+202A to U+202E, U+2066 to
        U+2069) are control characters in a name: the invalid-name answer
        and the prompt; the characters just outside those ranges are
        fine."""
        server = self.start()
        ada = self.arrive(server, "ada")
        client = self.connected(server, "n")
        for bad in C1_AND_BIDI:
            for name in ("x" + bad, bad + "ada", "a" + bad + "b"):
                client.send(name.encode() + b"\n")
                client.expect(INVALID_NAME + PROMPT, what=f" (for {name!r})")
        fine = "\u00a0\u2029\u202f\u2065\u206a\u00bf"
        client.send(("b" + fine).encode() + b"\n")
        client.expect_lines("User b" + fine + " arrived.")
        ada.expect_lines("User b" + fine + " arrived.")  # nothing came before

    def test_name_taken(self):
        """§3.2: a name in use (byte for byte) gets `Username NAME not
        available` and the prompt; another case is another name."""
        server = self.start()
        ada = self.arrive(server, "ada")
        other = self.connected(server, "other")
        other.send(b"ada\n")
        other.expect(b"Username ada not available\r\n" + PROMPT)
        other.send(b"\t ada \n")
        other.expect(b"Username ada not available\r\n" + PROMPT)
        other.send(b"Ada\n")
        other.expect_lines("User Ada arrived.")
        ada.expect_lines("User Ada arrived.")

    def test_arrival_reaches_everyone(self):
        """§3.2: `User NAME arrived.` goes to every registered user, the
        newcomer included (its first line after the prompt); not to
        unregistered connections."""
        server = self.start()
        waiting = self.connected(server, "waiting")
        ada, bob, cy = self.room(server, "ada", "bob", "cy")
        waiting.send(b"dee\n")
        waiting.expect_lines("User dee arrived.")
        for member in (ada, bob, cy):
            member.expect_lines("User dee arrived.")

    def test_names_lists_in_registration_order(self):
        """§3.3 NAMES: to the sender only, `Users here:` then ` NAME` per
        user in registration order; case-insensitive, spaces/tabs around."""
        server = self.start()
        zed, bob, amy = self.room(server, "zed", "bob", "amy")
        bob.send(b"quit\n")
        bob.expect_lines("Bye.")
        zed.expect_lines("User bob departed.")
        amy.expect_lines("User bob departed.")
        kim = self.arrive(server, "kim", (zed, amy))
        listing = lines("Users here:", " zed", " amy", " kim")
        for command in (b"NAMES", b"names", b"NaMeS", b"  names\t",
                        b"\tNAMES \r"):
            amy.send(command + b"\n")
            amy.expect(listing, what=f" (for {command!r})")
        # Nobody else got anything: their next line is this message.
        kim.send(b"after\n")
        for member in (zed, amy, kim):
            member.expect_lines("kim: after")

    def test_help(self):
        """§3.3 HELP: one fixed line to the sender only, case-insensitive."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        for command in (b"HELP", b"help", b" Help\t"):
            ada.send(command + b"\r\n")
            ada.expect(HELP, what=f" (for {command!r})")
        bob.send(b"after\n")
        ada.expect_lines("bob: after")
        bob.expect_lines("bob: after")

    def test_quit(self):
        """§3.3 QUIT (any case, spaces/tabs around): `Bye.` then close; the
        others get `User NAME departed.` once; the name is free again."""
        server = self.start()
        for number, command in enumerate((b"QUIT", b"quit", b" \tQuit \t")):
            ada, bob = self.room(server, f"ada{number}", f"bob{number}")
            bob.send(command + b"\r\n")
            bob.expect(BYE)
            bob.expect_eof()
            ada.expect_lines(f"User bob{number} departed.")
            again = self.arrive(server, f"bob{number}", [ada])
            again.send(b"back\n")
            again.expect_lines(f"bob{number}: back")
            ada.expect_lines(f"bob{number}: back")
            again.send(b"quit\n")
            again.expect(BYE)
            ada.expect_lines(f"User bob{number} departed.")
            ada.send(b"quit\n")
            ada.expect(BYE)
            ada.expect_eof()

    def test_empty_line_ignored(self):
        """§3.3: an empty line (LF, CR LF, CR NUL) is ignored, and so is a
        line of spaces and tabs (empty once trimmed)."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"\n\r\n\r\x00   \n\t \t\r\n")
        ada.send(b"marker\n")
        ada.expect_lines("ada: marker")
        bob.expect_lines("ada: marker")

    def test_message_kept_exactly(self):
        """§3.3: every user, the sender included, gets `NAME: LINE` with the
        line exactly as received (spaces and tabs kept)."""
        server = self.start()
        ada, bob, cy = self.room(server, "ada", "bob", "cy")
        for text in (b"hi", b"  hello   world  ", b"a\tb\t", b"\tx",
                     b"names please", b"NAMES x", b"quit now",
                     "héllo ☕ 😀 \u00a0".encode()):
            bob.send(text + b"\r\n")
            for member in (ada, bob, cy):
                member.expect(b"bob: " + text + EOL, what=f" for {text!r}")

    def test_no_forgery(self):
        """§4: a user cannot forge a server notice: their text always comes
        after `NAME: `."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        for text in (b"User x arrived.", b"User ada departed.",
                     b"Server shutting down", b"ada: hi", b"Bye."):
            bob.send(text + b"\n")
            ada.expect(b"bob: " + text + EOL)
            bob.expect(b"bob: " + text + EOL)


# -----------------------------------------------------------------------------
# SPEC section 3.4: departures
# -----------------------------------------------------------------------------

class Departure(ChatTest):

    def check_departs_once(self, server, leaving, members, how):
        """Makes `leaving` go by `how`; each member sees exactly one
        `User NAME departed.`, then a marker message."""
        how(leaving)
        departed = b"User " + as_bytes(leaving.label) + b" departed."
        for member in members:
            member.expect_lines(departed)
        members[0].send(b"marker\n")
        for member in members:
            member.expect_lines(f"{members[0].label}: marker")

    def test_departure_on_eof(self):
        """§3.4: EOF (close) -> `User NAME departed.` exactly once; bytes
        without a line end are not a line."""
        server = self.start()
        ada, bob, cy = self.room(server, "ada", "bob", "cy")

        def close(client):
            client.send(b"no line end")
            client.close()
        self.check_departs_once(server, cy, [ada, bob], close)

    def test_departure_on_reset(self):
        """§3.4: a TCP reset (SO_LINGER 0) -> departed exactly once."""
        server = self.start()
        ada, bob, cy = self.room(server, "ada", "bob", "cy")
        self.check_departs_once(server, cy, [ada, bob],
                                Client.close_with_reset)

    def test_departure_on_half_close(self):
        """§3.4/§4: half-close: the complete lines already sent are handled
        (the sender gets them too), then it departs and is closed; the
        unfinished line is not a line."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        bob.send(b"one\ntwo\r\nunfinished")
        bob.shutdown_write()
        for member in (ada, bob):
            member.expect_lines("bob: one", "bob: two")
        bob.expect_eof()
        ada.expect_lines("User bob departed.")
        ada.send(b"marker\n")
        ada.expect_lines("ada: marker")

    def test_unregistered_leaves_silently(self):
        """§3.4: a connection that never registered (closed, reset, or with
        half a name typed) leaves without a line to anybody."""
        server = self.start("--max-clients", "2")
        ada = self.arrive(server, "ada")
        first = self.connected(server, "first")
        first.send(b"half-a-name")
        first.close()
        second = self.connect_when_free(server, "second")
        second.close_with_reset()
        third = self.connect_when_free(server, "third")
        third.send(b"cy\n")
        third.expect_lines("User cy arrived.")
        ada.expect_lines("User cy arrived.")


# -----------------------------------------------------------------------------
# SPEC section 2: line framing
# -----------------------------------------------------------------------------

class Framing(ChatTest):

    def test_line_ends(self):
        """§2: LF, CR LF and CR NUL each end a line; the CR is dropped."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        for end in (b"\n", b"\r\n", b"\r\x00"):
            ada.send(b"end" + end)
            for member in (ada, bob):
                member.expect_lines("ada: end")

    def test_many_lines_in_one_packet(self):
        """§2: many lines in one packet give the same result as separate
        ones, in order."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"m1\nm2\r\nm3\r\x00m4\n\nNAMES\nm5\n")
        bob.expect_lines("ada: m1", "ada: m2", "ada: m3", "ada: m4",
                         "ada: m5")
        ada.expect_lines("ada: m1", "ada: m2", "ada: m3", "ada: m4",
                         "Users here:", " ada", " bob", "ada: m5")

    def test_one_byte_per_packet(self):
        """§2: bytes that arrive before a line is complete are kept; one
        byte per packet gives the same lines (naming included)."""
        server = self.start()
        ada = self.arrive(server, "ada")
        bob = self.connected(server, "bob")
        bob.send_bytewise(b" bob \r\n")
        bob.expect_lines("User bob arrived.")
        ada.expect_lines("User bob arrived.")
        bob.send_bytewise("hé ☕\r\n".encode() + b"x\r\x00y\n")
        for member in (ada, bob):
            member.expect_lines("bob: hé ☕", "bob: x", "bob: y")

    def test_line_end_split_across_reads(self):
        """§2: CR LF and CR NUL split over two reads are one line end, not
        two; a CR followed by other data is data. (IAC DO makes the server
        show it has read up to that point.)"""
        server = self.start()
        ada = self.arrive(server, "ada")
        bob = self.connected(server, "bob")
        bob.send(b"  \r")
        bob.sync(1)
        bob.send(b"\n")  # one blank name: exactly one refusal
        bob.expect(INVALID_NAME + PROMPT)
        bob.send(b"bob\r")
        bob.sync(2)
        bob.send(b"\x00")
        bob.expect_lines("User bob arrived.")
        ada.expect_lines("User bob arrived.")
        bob.send(b"one\r")
        bob.sync(3)
        bob.send(b"\ntwo\r" + telnet(IAC, DO, 4))
        bob.expect(lines("bob: one") + telnet(IAC, WONT, 4))
        bob.send(b"\x00three\r" + telnet(IAC, DO, 5))
        bob.expect(lines("bob: two") + telnet(IAC, WONT, 5))
        bob.send(b"x\n")  # "three\rx": a bare CR is a control character
        bob.expect(CONTROL)
        ada.expect_lines("bob: one", "bob: two")
        bob.send(b"marker\n")
        for member in (ada, bob):
            member.expect_lines("bob: marker")

    def test_bare_cr_is_data(self):
        """§2/§4: only one CR right before LF is dropped: CR CR LF keeps a
        CR, which is a control character; so is a CR inside a line and a
        NUL not after a CR."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        for bad in (b"a\r\r\n", b"a\rb\n", b"\r\r\n", b"a\x00b\n",
                    b"\x00\n"):
            ada.send(bad)
            ada.expect(CONTROL, what=f" (for {bad!r})")
        ada.send(b"marker\n")
        bob.expect_lines("ada: marker")
        ada.expect_lines("ada: marker")

    def test_unfinished_line_at_close_is_not_a_line(self):
        """§2: bytes without a line end when the client closes are not a
        line (not a name, not a message)."""
        server = self.start()
        ada = self.arrive(server, "ada")
        bob = self.arrive(server, "bob", [ada])
        bob.send(b"never sent")
        bob.close()
        ada.expect_lines("User bob departed.")
        unnamed = self.connected(server, "unnamed")
        unnamed.send(b"ghost")
        unnamed.shutdown_write()
        unnamed.expect_eof()
        cy = self.arrive(server, "cy", [ada])
        cy.send(b"marker\n")
        ada.expect_lines("cy: marker")


# -----------------------------------------------------------------------------
# SPEC section 2: telnet
# -----------------------------------------------------------------------------

class Telnet(ChatTest):

    def test_do_is_refused(self):
        """§2: IAC DO x is answered IAC WONT x (while naming and after)."""
        server = self.start()
        client = self.connected(server, "ada")
        for option in (1, 3, 24, 31, 6, 0, 255):
            client.send(telnet(IAC, DO, option))
            client.expect(telnet(IAC, WONT, option))
        client.send(b"ada\n")
        client.expect_lines("User ada arrived.")
        client.send(telnet(IAC, DO, 34))
        client.expect(telnet(IAC, WONT, 34))

    def test_will_is_refused(self):
        """§2: IAC WILL x is answered IAC DONT x."""
        server = self.start()
        client = self.connected(server, "ada")
        for option in (1, 3, 24, 31, 34):
            client.send(telnet(IAC, WILL, option))
            client.expect(telnet(IAC, DONT, option))

    def test_wont_and_dont_are_ignored(self):
        """§2: IAC WONT x and IAC DONT x get no answer (RFC 1143)."""
        server = self.start()
        client = self.connected(server, "ada")
        client.send(telnet(IAC, WONT, 1, IAC, DONT, 1, IAC, WONT, 24,
                           IAC, DONT, 3))
        client.sync(5)  # the first answer must be this one

    def test_several_requests_in_one_packet(self):
        """§2: a client like PuTTY sends several requests at once: each is
        answered, in order; the name around them is intact."""
        server = self.start()
        client = self.connected(server, "ada")
        client.send(b"a" + telnet(IAC, DO, 1, IAC, WILL, 24, IAC, DO, 3)
                    + b"da\n")
        client.expect(telnet(IAC, WONT, 1, IAC, DONT, 24, IAC, WONT, 3))
        client.expect_lines("User ada arrived.")

    def test_subnegotiation_removed(self):
        """§2: IAC SB ... IAC SE is removed, its bytes (LF, CR, IAC IAC
        included) are not data."""
        server = self.start()
        ada = self.connected(server, "ada")
        ada.send(b"a" + telnet(IAC, SB, 24, 0) + b"xterm" + telnet(IAC, SE)
                 + b"da\n")
        ada.expect_lines("User ada arrived.")
        ada.send(b"he" + telnet(IAC, SB, 31, 0, 80, IAC, IAC, 0, 24, IAC, SE)
                 + b"ll" + telnet(IAC, SB, 24) + b"\n\r\n\x1b"
                 + telnet(IAC, SE) + b"o\n")
        ada.expect_lines("ada: hello")

    def test_sequences_split_across_packets(self):
        """§2: the telnet state is kept across reads: DO, WILL and SB
        sequences split byte by byte are still removed and answered."""
        server = self.start()
        client = self.connected(server, "ada")
        client.send_bytewise(telnet(IAC, DO, 1), pause=0.02)
        client.expect(telnet(IAC, WONT, 1))
        client.send_bytewise(b"a" + telnet(IAC, WILL, 3) + b"d", pause=0.02)
        client.expect(telnet(IAC, DONT, 3))
        client.send_bytewise(telnet(IAC, SB, 24, 0) + b"vt100"
                             + telnet(IAC, SE) + b"a" + telnet(IAC, NOP)
                             + b"\r" + telnet(IAC, NOP) + b"\x00",
                             pause=0.02)  # "ada" CR NUL
        client.expect_lines("User ada arrived.")

    def test_iac_iac_is_byte_255(self):
        """§2: IAC IAC is the data byte 255, which fails UTF-8."""
        server = self.start()
        client = self.connected(server, "ada")
        client.send(b"a" + telnet(IAC, IAC) + b"b\n")
        client.expect(INVALID_UTF8 + PROMPT)
        client.send(b"ada\n")
        client.expect_lines("User ada arrived.")
        client.send(b"x" + telnet(IAC, IAC) + b"\n")
        client.expect(INVALID_UTF8)
        client.send(b"marker\n")
        client.expect_lines("ada: marker")

    def test_other_commands_dropped(self):
        """§2: IAC with another command byte (NOP, DM, IP, AYT, EC, EL, GA,
        SE) or any other byte: both bytes are dropped, no answer."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"a" + telnet(IAC, NOP) + b"b" + telnet(IAC, DM) + b"c"
                 + telnet(IAC, IP) + b"d" + telnet(IAC, AYT) + b"e"
                 + telnet(IAC, EC) + b"f" + telnet(IAC, EL) + b"g"
                 + telnet(IAC, GA) + b"h" + telnet(IAC, SE) + b"i"
                 + telnet(IAC) + b"xj" + telnet(IAC, 0) + b"k"
                 + telnet(IAC, 10) + b"l\n")
        ada.expect_lines("ada: abcdefghijkl")
        bob.expect_lines("ada: abcdefghijkl")

    def test_no_iac_to_clients_that_send_none(self):
        """§2: a client that sends no IAC never receives one, while another
        client negotiates and sends byte 255 (every Client checks this on
        every read; here it is shown explicitly)."""
        server = self.start()
        plain, talker = self.room(server, "plain", "talker")
        talker.send(telnet(IAC, DO, 1, IAC, WILL, 3))
        talker.expect(telnet(IAC, WONT, 1, IAC, DONT, 3))
        talker.send(b"x" + telnet(IAC, IAC) + b"y\n")
        talker.expect(INVALID_UTF8)
        talker.send(b"z" + telnet(IAC, NOP) + b"\n")
        talker.send(b"NAMES\nHELP\n")
        plain.expect_lines("talker: z")
        plain.send(b"HELP\nNAMES\n")
        plain.expect(HELP + lines("Users here:", " plain", " talker"))
        self.assertFalse(plain.sent_iac)


# -----------------------------------------------------------------------------
# SPEC section 4: bad input
# -----------------------------------------------------------------------------

class BadInput(ChatTest):

    def test_max_line_default(self):
        """§4: the default --max-line is 4096: a line of exactly 4096 bytes
        is a message, 4097 get `Line ignored: longer than 4096 bytes` once,
        then the next line works."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        exact = b"x" * 4096
        ada.send(exact + b"\r\n")
        for member in (ada, bob):
            member.expect(b"ada: " + exact + EOL)
        wide = "é".encode() * 2048  # 4096 bytes, 2048 characters
        ada.send(wide + b"\n")
        for member in (ada, bob):
            member.expect(b"ada: " + wide + EOL)
        ada.send(b"y" * 4097 + b"\n")
        ada.expect(too_long(4096))
        ada.send(b"after\n")
        for member in (ada, bob):
            member.expect_lines("ada: after")

    def test_max_line_counts_bytes_before_line_end(self):
        """§2/§4: the length is the bytes before LF, CR LF or CR NUL, after
        telnet commands are removed; a CR that is data counts."""
        server = self.start("--max-line", "10")
        ada, bob = self.room(server, "ada", "bob")
        accepted = [b"0123456789\n", b"0123456789\r\n", b"0123456789\r\x00",
                    b"01234" + telnet(IAC, NOP) + b"56789\n",
                    b"0123" + telnet(IAC, SB, 24) + b"abc" + telnet(IAC, SE)
                    + b"456789\r\n"]
        for line in accepted:
            ada.send(line)
            for member in (ada, bob):
                member.expect_lines("ada: 0123456789")
        for line in (b"0123456789a\n", b"0123456789\r\r\n",
                     b"012345678" + telnet(IAC, IAC) + b"9\n",
                     "0123456789é".encode() + b"\n"):
            ada.send(line)
            ada.expect(too_long(10), what=f" (for {line!r})")
        ada.send(b"marker\n")
        for member in (ada, bob):
            member.expect_lines("ada: marker")

    def test_too_long_notice_once_rest_discarded(self):
        """§4: one notice per overlong line, even when it comes in pieces;
        the rest up to the line end is discarded, not read as lines. (The
        notice may come as soon as the limit is passed.)"""
        server = self.start("--max-line", "10")
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"a" * 8)
        ada.sync(1)
        ada.send(b"b" * 8 + telnet(IAC, DO, 2))
        ada.send(b"c" * 30 + b"\r" + telnet(IAC, DO, 3))
        ada.send(b"\nnext\n")
        notice, two, three = too_long(10), telnet(IAC, WONT, 2), \
            telnet(IAC, WONT, 3)
        ada.expect_one_of([notice + two + three, two + notice + three,
                           two + three + notice])
        for member in (ada, bob):
            member.expect_lines("ada: next")

    @cost(3)
    def test_megabyte_line_costs_one_notice(self):
        """§4: a 1 MB line without a line end costs one notice and no memory
        (the server's resident memory grows by less than 512 KiB while it
        reads the unfinished line; not checked in sanitizer builds, whose
        runtimes keep freed memory); then the connection works as before."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"warm up " * 600 + b"\n")  # the first notice's allocations
        ada.expect(too_long(4096))
        ada.sync(1)
        before = resident_memory(server.pid)
        chunk = b"z" * 65536
        for _ in range(16):
            ada.send(chunk)
        ada.send(telnet(IAC, DO, 2))  # answered once all of it was read
        ada.expect_one_of([too_long(4096) + telnet(IAC, WONT, 2)])
        grown = resident_memory(server.pid) - before
        if not is_sanitized(SERVER):
            self.assertLess(grown, 512 * 1024, f"resident memory grew by "
                            f"{grown} bytes while a 1 MB line was read")
        ada.send(b"\n")
        ada.send(b"after\n")
        for member in (ada, bob):
            member.expect_lines("ada: after")

    def test_invalid_utf8(self):
        """§4: lines that are not valid UTF-8 (overlong, surrogate, above
        U+10FFFF, truncated, lone continuation, C0/C1/F5..FF bytes) get
        `Line ignored: invalid UTF-8`; nobody else sees them."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        cases = [b"\xc0\x80", b"\xc1\xbf", b"a\xe0\x80\x80", b"\xe0\x9f\xbf",
                 b"\xf0\x8f\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
                 b"\xf4\x90\x80\x80", b"\xf7\xbf\xbf\xbf", b"x\xe2\x82",
                 b"\xe2\x82x", b"\xf0\x9f\x98", b"\xc3", b"\x80",
                 b"a\xbfb", b"\xf5\x80\x80\x80", b"\xf8", b"\xfe", b"\xfc",
                 b"abc\xc3\x28"]
        for bad in cases:
            ada.send(bad + b"\n")
            ada.expect(INVALID_UTF8, what=f" (for {bad!r})")
        ada.send(telnet(IAC, IAC) + b"\n")  # the byte 0xFF
        ada.expect(INVALID_UTF8)
        bob.send(b"marker\n")
        for member in (ada, bob):
            member.expect_lines("bob: marker")

    def test_valid_utf8_edges(self):
        """§4: valid UTF-8 at the edges is a message: U+00A0 (the first
        two-byte character that is no C1 control), U+07FF, U+0800, U+D7FF,
        U+E000, U+FFFD, U+FFFF, U+10000, U+10FFFF."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        text = "".join(map(chr, (0xA0, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD,
                                 0xFFFF, 0x10000, 0x10FFFF))).encode()
        ada.send(text + b"\n")
        for member in (ada, bob):
            member.expect(b"ada: " + text + EOL)

    def test_control_characters(self):
        """§4: a control character (ESC, DEL, NUL, bell, a bare CR...) in a
        message gets `Line ignored: control characters are not allowed`
        and reaches nobody; TAB is allowed."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        for bad in (b"\x1b[2Jgotcha", b"a\x1b", b"del\x7f", b"\x07bell",
                    b"a\x01b", b"a\x0bb", b"a\x0cb", b"x\x1fy", b"a\rb"):
            ada.send(bad + b"\n")
            ada.expect(CONTROL, what=f" (for {bad!r})")
        ada.send(b"tab\tok\n")
        for member in (ada, bob):
            member.expect_lines("ada: tab\tok")

    def test_c1_and_bidi_controls(self):
        """§4: the C1 controls U+0080 to U+009F (U+009B is a terminal's
        CSI: `CSI 1G CSI 2K` erases the line a fake notice then fills) and
        the bidirectional overrides and isolates U+202A to U+202E and
        U+2066 to U+2069 get `Line ignored: control characters are not
        allowed` and reach nobody; the characters just outside those ranges
        are a message."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        forged = "\u009b1G\u009b2KUser bob departed."
        for bad in [forged, "moc.\u202etxt.exe"] + [
                "a" + control + "b" for control in C1_AND_BIDI]:
            ada.send(bad.encode() + b"\n")
            ada.expect(CONTROL, what=f" (for {bad!r})")
        fine = "\u00a0 \u2029 \u202f \u2065 \u206a \u00bf"
        ada.send(fine.encode() + b"\n")
        for member in (ada, bob):  # bob's next line: nothing came before
            member.expect_lines("ada: " + fine)

    def test_checks_in_order(self):
        """§4: the first failing check answers: too long before invalid
        UTF-8, invalid UTF-8 before control characters."""
        server = self.start("--max-line", "8")
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"\xfe\xfe\x1b\x1b\x1b\x1b\x1b\x1b\x1b\n")
        ada.expect(too_long(8))
        ada.send(b"\xc0\x80\x1b\n")
        ada.expect(INVALID_UTF8)
        ada.send(b"\x1b\xc0\x80\n")
        ada.expect(INVALID_UTF8)
        bob.send(b"marker\n")
        for member in (ada, bob):
            member.expect_lines("bob: marker")


# -----------------------------------------------------------------------------
# SPEC section 4: connection limits
# -----------------------------------------------------------------------------

class Limits(ChatTest):

    def test_server_full(self):
        """§4 --max-clients: the newcomer gets exactly `Server full, try
        again later` (no welcome) and is closed; the others, registered
        or not, are untouched; a slot frees when a client leaves."""
        server = self.start("--max-clients", "2")
        ada = self.arrive(server, "ada")
        waiting = self.connected(server, "waiting")
        for number in range(3):
            extra = self.connect(server, f"extra{number}")
            extra.expect(SERVER_FULL)
            extra.expect_eof()
        ada.send(b"still here\n")
        ada.expect_lines("ada: still here")
        waiting.send(b"bob\n")
        waiting.expect_lines("User bob arrived.")
        ada.expect_lines("User bob arrived.")
        ada.send(b"QUIT\n")
        ada.expect(BYE)
        ada.expect_eof()
        waiting.expect_lines("User ada departed.")
        newcomer = self.connect_when_free(server, "newcomer")
        newcomer.send(b"cy\n")
        newcomer.expect_lines("User cy arrived.")
        waiting.expect_lines("User cy arrived.")
        self.connect(server, "extra").expect(SERVER_FULL)

    @cost(2)
    def test_login_timeout(self):
        """§4 --login-timeout 1: no name within 1 s: `Timed out waiting for
        a user name`, then close; also with half a name typed."""
        server = self.start("--login-timeout", "1")
        start = time.monotonic()
        silent = self.connected(server, "silent")
        typing = self.connected(server, "typing")
        typing.send(b"half-a-na")
        for client in (silent, typing):
            client.expect(TIMED_OUT, timeout=3)
            self.assertGreaterEqual(time.monotonic() - start, 0.9,
                                    "timed out too early")
            client.expect_eof()

    @cost(3)
    def test_failed_attempts_do_not_restart_clock(self):
        """§4: failed name attempts do not restart the login clock."""
        server = self.start("--login-timeout", "2")
        start = time.monotonic()
        client = self.connected(server, "trying")
        for attempt in range(1, 4):
            while time.monotonic() < start + 0.3 * attempt:
                time.sleep(0.01)  # pacing the attempts, not waiting for one
            client.send(b"bad name\n")
            client.expect(INVALID_NAME + PROMPT)
        client.expect(TIMED_OUT, timeout=3)
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 1.9, "timed out too early")
        self.assertLess(elapsed, 2.0 + seconds(0.7),
                        "the clock restarted after a failed attempt")
        client.expect_eof()

    @cost(2)
    def test_registered_users_have_no_timeout(self):
        """§4: registered users have no idle timeout; a login timeout of
        someone else reaches nobody else."""
        server = self.start("--login-timeout", "1")
        ada = self.arrive(server, "ada")
        late = self.connected(server, "late")  # connected after ada
        late.expect(TIMED_OUT, timeout=3)  # so ada's second has passed too
        late.expect_eof()
        ada.send(b"still here\n")
        ada.expect_lines("ada: still here")

    @cost(2)
    def test_login_timeout_zero_is_none(self):
        """§1/§4: --login-timeout 0 means no login timeout."""
        server = self.start("--login-timeout", "0")
        client = self.connected(server, "slow-typist")
        client.expect_silence(1.5)
        client.send(b"ada\n")
        client.expect_lines("User ada arrived.")

    @cost(6)
    @cost(12)
    def test_out_of_descriptors_waiting_clients_admitted(self):
        """§4 (issue 11): a server out of descriptors (open-file limit 64,
        soft and hard, so that it cannot raise it) with more clients than
        fit leaves the others waiting in the accept queue; as served
        clients leave, one every 200 ms, the waiting ones get in, the k-th
        within a second of the k-th departure. The log says `accept
        paused` once for the whole shortage, not at every retry."""
        limit, clients = 64, 96
        server = self.start(prefix=["sh", "-c", f'ulimit -n {limit} && '
                                    'exec "$@"', "sh"])
        with open(f"/proc/{server.pid}/limits") as limits:
            self.assertIn(f" {limit} ", next(
                line for line in limits if line.startswith("Max open files")))
        welcome = self.welcome(server)
        everyone = [self.connect(server, f"c{number}")
                    for number in range(clients)]
        welcomed = {}  # client -> when its welcome arrived

        def collect(until):
            """Takes the welcomes that arrive until `until` (monotonic)."""
            for _ in range(100000):
                waiting = [c for c in everyone if c not in welcomed]
                left = until - time.monotonic()
                if not waiting or left <= 0:
                    return
                ready, _, _ = select.select([c.sock for c in waiting], [],
                                            [], left)
                now = time.monotonic()
                for client in waiting:
                    if client.sock in ready:
                        client._fill(now + 1)
                        if len(client.buffer) >= len(welcome) or client.eof:
                            client.expect(welcome, what=" (admitted late)")
                            welcomed[client] = now

        # The served are those the server accepted ("connected" in the
        # log, with their port) before it logged that it is out of
        # descriptors; a model that needs no descriptor per client in the
        # accepting process welcomes everyone.
        deadline = time.monotonic() + seconds(20)
        for _ in range(10000):
            collect(time.monotonic() + 0.05)
            log = server.stderr_text()
            accepted = {int(port) for port in re.findall(
                r"127\.0\.0\.1:([0-9]+) connected", log)}
            if len(welcomed) == clients or (
                    "accept paused" in log and
                    all(c in welcomed for c in everyone
                        if c.local_port in accepted)):
                break
            self.assertLess(time.monotonic(), deadline,
                            f"{len(welcomed)} of {clients} welcomed and no "
                            f"'accept paused' in the log:\n{log[-2000:]}")
        served = [c for c in everyone if c in welcomed]
        waiting = [c for c in everyone if c not in welcomed]
        if waiting:
            self.assertGreater(len(served), 8, "too few clients served")
        # One served client leaves every 200 ms (a few more departures
        # than there are clients waiting).
        departures = []
        for client in served[:len(waiting) + 3]:
            client.close()
            departures.append(time.monotonic())
            collect(departures[-1] + 0.2)
        collect(time.monotonic() + seconds(1.0))
        admitted = sorted(welcomed[c] for c in waiting if c in welcomed)
        late = []
        for k in range(min(len(waiting), len(departures))):
            if k >= len(admitted):
                late.append(f"waiting client {k + 1}: never admitted")
            elif admitted[k] > departures[k] + seconds(1.0):
                late.append(f"waiting client {k + 1}: admitted "
                            f"{admitted[k] - departures[k]:.2f} s after "
                            f"departure {k + 1}")
        if late:
            self.fail(f"{len(served)} served, {len(waiting)} waiting, "
                      f"{len(admitted)} admitted after {len(departures)} "
                      f"departures: " + "; ".join(late[:5]))
        paused = server.stderr_text().count("accept paused")
        self.assertLessEqual(paused, 1, f"'accept paused' logged {paused} "
                             f"times in one shortage")
        for client in waiting:  # the newcomers are served
            client.send(b"\n")
            client.expect(INVALID_NAME + PROMPT)

    def test_slow_client_dropped(self):
        """§3.4/§4 --max-backlog: a client that never reads while others
        chat heavily is dropped; everybody else sees `User NAME departed.`
        once, in one order with the messages, and keeps chatting."""
        server = self.start("--max-backlog", "65536")
        # slow registers between the two others: a server that drops it in
        # the middle of a broadcast must still give both one order.
        bea = self.arrive(server, "bea")
        slow = self.arrive(server, "slow", [bea], rcvbuf=4096)
        tom = self.arrive(server, "tom", [bea])
        departed = b"User slow departed."
        seen = {bea: [], tom: []}
        payload = "x" * 1000
        deadline = time.monotonic() + seconds(30)
        number, sent = 0, 0
        while not all(departed in received for received in seen.values()):
            self.assertLess(time.monotonic(), deadline,
                            "slow client not dropped within the deadline")
            self.assertLess(sent, 64 << 20,
                            "slow client not dropped after 64 MB of chat")
            batch = "".join(f"{number + k} {payload}\n" for k in range(32))
            tom.send(batch)
            sent += len(batch)
            number += 32
            for member in (tom, bea):
                seen[member] += member.read_lines_until(
                    f"tom: {number - 1} {payload}")
        bea.send(b"still here\n")
        for member in (tom, bea):
            seen[member] += member.read_lines_until("bea: still here")
        self.assertSameSequence(seen[bea], seen[tom], "bea and tom")
        self.assertEqual(seen[bea].count(departed), 1)
        others = [line for line in seen[bea]
                  if line != departed and not line.startswith(b"tom: ")]
        self.assertEqual(others, [b"bea: still here"])
        slow.drain_until_closed(timeout=10)
        self.assertEqual(server.stop(), 0)
        log = server.stderr_text()
        self.assertRegex(log, rf"(?<![0-9]){slow.local_port}(?![0-9]).*slow",
                         "no log line with the client's port and 'slow'")


# -----------------------------------------------------------------------------
# SPEC section 5: order
# -----------------------------------------------------------------------------

class Order(ChatTest):

    @cost(4)
    def test_one_order_for_everyone(self):
        """§5: with several concurrent senders and a user who arrives, talks
        and quits meanwhile, every user sees the same sequence; each
        sender's order is kept; arrived before their messages, departed
        after; the sender gets its own messages before `Bye.`"""
        server = self.start()
        members = self.room(server, "ann", "ben", "cat", "dov")
        count = 60
        result = {}

        def sender(client):
            for number in range(count):
                client.send(f"{client.label}-{number}\n")

        def visitor():
            eve = self.connected(server, "eve")
            eve.send(b"eve\n")
            eve.expect_lines("User eve arrived.")
            eve.send("".join(f"eve-{number}\n" for number in range(10))
                     + "QUIT\n")
            result["eve"] = eve.read_lines_until("Bye.", limit=1000)
            eve.expect_eof()

        run_parallel(*(lambda client=client: sender(client)
                       for client in members[:3]), visitor)
        expected = 3 * count + 10 + 2  # messages, eve's arrival, departure
        sequences = [[member.read_line(10) for _ in range(expected)]
                     for member in members]
        members[3].send(b"end\n")  # nothing more came before this
        for member in members:
            member.expect_lines("dov: end")
        for member, sequence in zip(members[1:], sequences[1:]):
            self.assertSameSequence(sequences[0], sequence,
                                    f"ann and {member.label}")
        sequence = sequences[0]
        for member in members[:3]:
            name = member.label
            mine = [line for line in sequence if line.startswith(
                name.encode() + b": ")]
            self.assertEqual(mine, [f"{name}: {name}-{n}".encode()
                                    for n in range(count)])
        eve_lines = [i for i, line in enumerate(sequence)
                     if line.startswith(b"eve: ")]
        self.assertEqual(len(eve_lines), 10)
        self.assertEqual(sequence.count(b"User eve arrived."), 1)
        self.assertEqual(sequence.count(b"User eve departed."), 1)
        arrived = sequence.index(b"User eve arrived.")
        self.assertLess(arrived, eve_lines[0], "a message before arrival")
        self.assertGreater(sequence.index(b"User eve departed."),
                           eve_lines[-1], "a message after departure")
        eve = result["eve"]
        self.assertEqual(eve[-1], b"Bye.")
        seen_by_eve = eve[:-1]
        self.assertSameSequence(
            sequence[arrived + 1:arrived + 1 + len(seen_by_eve)],
            seen_by_eve, "ann and eve")
        self.assertEqual(
            sum(line.startswith(b"eve: ") for line in seen_by_eve), 10,
            "eve did not get all her own messages")


# -----------------------------------------------------------------------------
# SPEC section 1: command line
# -----------------------------------------------------------------------------

class CommandLine(ChatTest):

    OPTIONS = ("--name", "--port", "--host", "--max-clients", "--max-line",
               "--max-backlog", "--login-timeout", "--quiet", "--help",
               "--version")

    def test_help(self):
        """§1: -h and --help print usage (every option) on stdout, exit 0."""
        for flag in ("--help", "-h"):
            status, out, _ = self.run_command(flag)
            self.assertEqual(status, 0, f"{flag}: exit status")
            self.assertRegex(out.lower(), "usage", f"{flag}: no usage")
            for option in self.OPTIONS:
                self.assertIn(option, out, f"{flag}: usage lacks {option}")

    def test_version(self):
        """§1: -V and --version print a version on stdout, exit 0."""
        for flag in ("--version", "-V"):
            status, out, _ = self.run_command(flag)
            self.assertEqual(status, 0, f"{flag}: exit status")
            self.assertRegex(out, r"[0-9]+\.[0-9]+", f"{flag}: no version")

    def test_bad_arguments(self):
        """§1: a bad option or value: a message naming it on the first
        stderr line, exit 2, no server started."""
        cases = [(["--bogus"], ["--bogus"]),
                 (["-Z"], ["Z"]),
                 (["--port", "abc"], ["abc", "port"]),
                 (["--port", "65536"], ["65536", "port"]),
                 (["-p", "-1"], ["-1", "p"]),
                 (["--port"], ["port"]),
                 (["--max-clients", "many"], ["many", "max-clients"]),
                 (["--max-line", "12x"], ["12x", "max-line"]),
                 (["--max-backlog", "-5"], ["-5", "max-backlog"]),
                 (["--login-timeout", "soon"], ["soon", "login-timeout"]),
                 (["--login-timeout", "-1"], ["-1", "login-timeout"]),
                 (["Room", "notaport"], ["notaport"]),
                 (["Room", "0", "extra"], ["extra"])]
        results = self.run_commands([args for args, _ in cases])
        for (args, names), (status, out, err) in zip(cases, results):
            self.assertEqual(status, 2, f"{args}: exit status; stderr {err!r}")
            self.assertNotIn("running on port", out, f"{args}: started")
            first = err.split("\n", 1)[0]
            self.assertTrue(any(name in first for name in names),
                            f"{args}: first stderr line {first!r} does not "
                            f"name {' or '.join(names)}")

    def test_backlog_below_two_lines(self):
        """§1: --max-backlog below twice --max-line is a bad argument: one
        line naming both options on stderr, exit 2, no server started (the
        defaults count: --max-line 2000000 alone, --max-backlog 8191
        alone); exactly twice is accepted, and a line of --max-line bytes
        then reaches everyone."""
        cases = [["--max-line", "2000000"], ["--max-backlog", "8191"],
                 ["--max-line", "1000", "--max-backlog", "1999"],
                 ["--max-backlog", "1999", "--max-line", "1000"]]
        results = self.run_commands([args + ["-p", "0", "-H", "127.0.0.1"]
                                     for args in cases])
        for args, (status, out, err) in zip(cases, results):
            self.assertEqual(status, 2, f"{args}: exit status; stderr {err!r}")
            self.assertNotIn("running on port", out, f"{args}: started")
            first = err.split("\n", 1)[0]
            for option in ("--max-backlog", "--max-line"):
                self.assertIn(option, first, f"{args}: first stderr line "
                              f"{first!r} does not name {option}")
        server = self.start("--max-line", "1000", "--max-backlog", "2000")
        ada, bob = self.room(server, "ada", "bob")
        ada.send(b"x" * 1000 + b"\n")
        for member in (ada, bob):
            member.expect(b"ada: " + b"x" * 1000 + EOL)

    def test_room_name_rules(self):
        """§1 (project decision): the room NAME is valid UTF-8 without
        control characters (those of §4, C1 and bidirectional included),
        1 to 256 bytes; otherwise exit 2."""
        bad = [b"", b"a" * 257, "é".encode() * 128 + b"a", b"a\x01b",
               b"tab\tname", b"del\x7f", b"\xc3\x28", b"line\nbreak",
               "a\u009bz".encode(), "\u0085".encode(),
               "moc.\u202etxt".encode(), "a\u2066z".encode()]
        results = self.run_commands([[b"-n", name, b"-p", b"0", b"-H",
                                      b"127.0.0.1"] for name in bad])
        for name, (status, out, err) in zip(bad, results):
            self.assertEqual(status, 2, f"room name {name!r}: exit status")
            self.assertNotIn("running on port", out)
            self.assertTrue(err.strip(), f"room name {name!r}: no message")
        for name in (b"a" * 256, "é".encode() * 128,
                     "Chat ☕ Room".encode()):
            server = self.start(room=name, quiet=True)
            self.connected(server, "ada")

    def test_positional_name_and_port(self):
        """§1: `chat NAME PORT` positional; the startup line names the real
        port; -n/--name and -p/--port (also --opt=value) do the same."""
        server = Server(["Lobby", "0", "-H", "127.0.0.1"], room=b"Lobby")
        self.addCleanup(self._finish, server)
        server.wait_started()
        self.connected(server, "ada")
        probes = [socket.socket() for _ in range(5)]
        for probe in probes:  # ports that were free a moment ago
            probe.bind(("127.0.0.1", 0))
        free_ports = [probe.getsockname()[1] for probe in probes]
        for probe in probes:
            probe.close()
        variants = (lambda port: ["Hall", port, "-H", "127.0.0.1"],
                    lambda port: ["-n", "Hall", "-p", port, "-H", "127.0.0.1"],
                    lambda port: ["--name", "Hall", "--port", port, "--host",
                                  "127.0.0.1"],
                    lambda port: ["--name=Hall", f"--port={port}",
                                  "--host=127.0.0.1", "--quiet"],
                    lambda port: ["-q", "Hall", "-H", "127.0.0.1", port])
        for free, variant in zip(free_ports, variants):
            args = variant(str(free))
            server = Server(args, room=b"Hall")
            self.addCleanup(self._finish, server)
            server.wait_started()
            self.assertEqual(server.port, free, f"{args}: port")
            self.connected(server, "ada")
            self.assertEqual(server.stop(), 0)

    def test_raises_open_file_limit(self):
        """§1: the server raises its open-file soft limit to the hard limit
        (started here with a soft limit of 256)."""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard <= 256:
            self.skipTest(f"hard limit {hard} leaves nothing to raise")
        server = Server(["-q", "-p", "0", "-H", "127.0.0.1"],
                        prefix=["sh", "-c", 'ulimit -Sn 256 && exec "$@"',
                                "sh"])
        self.addCleanup(self._finish, server)
        server.wait_started()
        with open(f"/proc/{server.pid}/limits") as limits:
            line = next(line for line in limits
                        if line.startswith("Max open files"))
        soft, limit = line.split()[3:5]
        self.assertEqual((soft, limit), (str(hard), str(hard)), line)

    def test_room_name_option(self):
        """§1: -n NAME gives the room name; default ChatServer."""
        server = self.start(room="Kitchen")
        self.connected(server, "ada")

    def test_port_in_use(self):
        """§1: a port in use: a clear message on stderr, exit 1."""
        server = self.start(host=None)
        for args in (["-p", str(server.port)],
                     ["-p", str(server.port), "-H", "127.0.0.1"]):
            status, out, err = self.run_command(*args, redis=server.redis)
            self.assertEqual(status, 1, f"{args}: exit status; stderr {err!r}")
            self.assertTrue("in use" in err.lower() or str(server.port) in err,
                            f"{args}: unclear message {err!r}")
            self.assertNotIn("running on port", out)
        self.connected(server, "ada")  # the first server is unharmed

    def test_default_host_is_ipv4_and_ipv6(self):
        """§1: with the default host the server listens on IPv4 and IPv6 at
        the one port it prints; both reach the same room."""
        server = self.start(host=None)
        ada = self.arrive(server, "ada")
        if not has_ipv6_loopback():
            self.skipTest("no IPv6 on this machine")
        bob = self.connect(server, "bob", host="::1")
        bob.expect(self.welcome(server))
        bob.send(b"bob\n")
        bob.expect_lines("User bob arrived.")
        ada.expect_lines("User bob arrived.")

    def test_host_option(self):
        """§1: -H ADDR binds that address (127.0.0.1, ::1)."""
        server = self.start(host="127.0.0.1")
        self.connected(server, "four")
        if has_ipv6_loopback():
            server = self.start(host="::1")
            self.connected(server, "six", host="::1")


# -----------------------------------------------------------------------------
# SPEC section 1: log
# -----------------------------------------------------------------------------

TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:[.,][0-9]+)?(?:Z|[+]00:?00)(?![0-9])")


class Log(ChatTest):

    def wait_for_log(self, server, pattern, timeout=10.0):
        deadline = time.monotonic() + seconds(timeout)
        while not re.search(pattern, server.stderr_text(), re.M):
            if time.monotonic() > deadline:
                self.fail(f"no log line matching {pattern!r}; log:\n"
                          f"{server.stderr_text()[-3000:]}")
            time.sleep(0.01)

    @cost(3)
    def test_log_lines(self):
        """§1: one log line per accept/refusal, registration and departure
        (with its cause: quit, closed, timeout), at start and at stop; each
        starts with an ISO 8601 UTC time and names the peer's address;
        never one line per message."""
        begin = datetime.datetime.now(datetime.timezone.utc)
        server = self.start("--max-clients", "3", "--login-timeout", "1")
        self.wait_for_log(server, r".\n")  # the start line, before clients
        ada = self.arrive(server, "ada")
        for number in range(30):
            ada.send(f"secret-{number}\n")
        ada.send(b"QUIT\n")
        ada.read_lines_until("Bye.")
        bob = self.arrive(server, "bob")
        bob.close()
        late = self.connected(server, "late")
        late.expect(TIMED_OUT, timeout=3)
        late.expect_eof()
        fillers = [self.connect_when_free(server, f"filler{n}")
                   for n in range(3)]
        refused = self.connect(server, "refused")
        refused.expect(SERVER_FULL)
        ports = {client.label: client.local_port
                 for client in [ada, bob, late, refused] + fillers}

        def about(label, text=None):
            return (rf"^.*(?<![0-9]){ports[label]}(?![0-9])"
                    + (rf".*(?i:{text})" if text else ""))
        for label, text in (("ada", "quit"), ("bob", "closed"),
                            ("late", "timeout"), ("refused", None)):
            self.wait_for_log(server, about(label, text))
        before_stop = len(server.stderr_text().splitlines())
        self.assertEqual(server.stop(), 0)
        log = server.stderr_text().splitlines()
        end = datetime.datetime.now(datetime.timezone.utc)
        for line in log:
            match = TIMESTAMP.match(line)
            self.assertTrue(match, f"log line without ISO 8601 UTC time: "
                            f"{line!r}")
            when = datetime.datetime.strptime(
                match.group(1), "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc)
            self.assertLess(abs((when - begin).total_seconds()), 120)
            self.assertLessEqual(when, end + datetime.timedelta(seconds=2),
                                 f"not UTC? {line!r}")
            self.assertNotIn("secret", line, "a log line per message")
        for label, port in ports.items():
            mine = [line for line in log
                    if re.search(rf"(?<![0-9]){port}(?![0-9])", line)]
            self.assertTrue(mine, f"no log line for {label}")
            for line in mine:
                self.assertIn("127.0.0.1", line, "peer address not named")
        for label, count in (("ada", 3), ("bob", 3), ("late", 2)):
            mine = [line for line in log if re.match(about(label), line)]
            self.assertGreaterEqual(len(mine), count, f"log lines for {label}")
            self.assertLessEqual(len(mine), 5, f"log lines for {label}")
        self.assertTrue(any("ada" in line for line in log
                            if re.match(about("ada"), line)),
                        "no log line names the registered user")
        known = "|".join(str(port) for port in ports.values())
        after = [line for line in log[before_stop:]
                 if not re.search(rf"(?<![0-9])({known})(?![0-9])", line)]
        self.assertTrue(after, "no log line at stop")

    @cost(8)
    def test_log_to_a_pipe_nobody_reads(self):
        """§1: the log never delays a client or the room: with stderr a
        pipe that nobody reads (full after some hundred lines), the
        2,000th client of connect-and-close cycles is still welcomed, the
        room still moves, and SIGTERM still stops the server within 2 s
        with every client told. Once the pipe is read, the next line comes
        after `N log lines dropped`."""
        server = self.start(stderr_pipe=True)
        ada, bob = self.room(server, "ada", "bob")
        for number in range(2000):
            client = self.connect(server, f"cycle{number}")
            client.expect(self.welcome(server),
                          what=f" (welcome of client {number + 1})")
            client.close()
            server.clients.remove(client)
        full = server.stderr_pipe_size()
        self.assertGreaterEqual(full, 32768, "the log pipe never filled: "
                                "2,000 cycles should log far more than it "
                                "holds")
        bob.send(b"still moving\n")
        for member in (ada, bob):
            member.expect_lines("bob: still moving")
        # The pipe drains: the next line tells how many were dropped.
        server.read_stderr_pipe()
        self.connected(server, "after")
        deadline = time.monotonic() + seconds(10)
        dropped = None
        while dropped is None:
            self.assertLess(time.monotonic(), deadline,
                            "no 'N log lines dropped' line once the pipe "
                            "was read; last lines: "
                            + server.stderr_text()[-1000:])
            dropped = re.search(r"(?m)^\S+ ([0-9]+) log lines? dropped",
                                server.stderr_text())
            time.sleep(0.01)
        self.assertGreater(int(dropped.group(1)), 0)
        # And a stalled log again: shutdown still works.
        for number in range(1000):
            if server.stderr_pipe_size() >= full:
                break
            client = self.connect(server, f"refill{number}")
            client.expect(self.welcome(server))
            client.close()
            server.clients.remove(client)
        unnamed = self.connected(server, "unnamed")
        self.assertEqual(server.stop(), 0)
        self.assertLess(server.stop_elapsed, seconds(2))
        for client in (ada, bob, unnamed):
            client.expect(SHUTTING_DOWN)
            client.expect_eof()

    def test_quiet(self):
        """§1: -q: nothing on stderr (apart from sanitizer output)."""
        server = self.start("--login-timeout", "1", "--max-clients", "1",
                            quiet=True)
        ada = self.arrive(server, "ada")
        self.connect(server, "refused").expect(SERVER_FULL)
        ada.send(b"hello\nQUIT\n")
        ada.read_lines_until("Bye.")
        late = self.connect_when_free(server, "late")
        late.expect(TIMED_OUT, timeout=3)
        self.assertEqual(server.stop(), 0)
        self.assertEqual(server.stderr_text(), "")


# -----------------------------------------------------------------------------
# SPEC section 1: shutdown
# -----------------------------------------------------------------------------

class Shutdown(ChatTest):

    def check_shutdown(self, signum):
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        bob.send(b"half a mess")
        bob.sync()
        unnamed = self.connected(server, "unnamed")
        typing = self.connected(server, "typing")
        typing.send(b"half a na")
        typing.sync()
        status = server.stop(signum)  # fails unless it exits within 2 s
        self.assertEqual(status, 0, "exit status")
        self.assertLess(server.stop_elapsed, seconds(2))
        for client in (ada, bob, unnamed, typing):
            client.expect(SHUTTING_DOWN)
            client.expect_eof()

    def test_sigterm(self):
        """§1: SIGTERM: every client, registered or not, gets `Server
        shutting down` as its next line, then EOF; exit 0 within 2 s."""
        self.check_shutdown(signal.SIGTERM)

    def test_sigint(self):
        """§1: SIGINT: as SIGTERM."""
        self.check_shutdown(signal.SIGINT)

    def test_sighup(self):
        """§1: SIGHUP: as SIGTERM, a graceful stop (not the default action,
        which kills)."""
        self.check_shutdown(signal.SIGHUP)

    def test_user_signals_do_not_kill(self):
        """§1 (project decision): SIGUSR1 and SIGUSR2, sent to the server
        and to its whole process group, a few times each, stop nothing: no
        user departs, the room still moves, a newcomer is welcomed, and the
        server still stops on SIGTERM with exit status 0 (teardown)."""
        server = self.start()
        ada, bob = self.room(server, "ada", "bob")
        unnamed = self.connected(server, "unnamed")
        for number in range(3):
            for signum in (signal.SIGUSR1, signal.SIGUSR2):
                os.kill(server.pid, signum)
                os.killpg(server.pid, signum)
            # A round trip through the room: every process and thread that
            # serves these clients ran since the signals were sent, so a
            # default action would have been taken by now.
            bob.send(f"after signals {number}\n")
            for member in (ada, bob):
                member.expect_lines(f"bob: after signals {number}")
            unnamed.sync()
        self.assertIsNone(server.process.poll(), "the server died")
        carl = self.arrive(server, "carl", [ada, bob])
        carl.send(b"hello\n")
        for member in (ada, bob, carl):
            member.expect_lines("carl: hello")

    @cost(5)
    def test_shutdown_with_stalled_client(self):
        """§1: exit 0 within 2 s also while a client has stopped reading
        and the server's socket buffer to it is full (its send queue, seen
        in /proc/net/tcp, stopped growing); the others still get the
        line."""
        server = self.start("--max-backlog", str(64 << 20))
        stalled = self.arrive(server, "stalled", rcvbuf=4096)
        tom = self.arrive(server, "tom")
        unnamed = self.connected(server, "unnamed")
        payload = "y" * 1000
        queued = []  # the send queue, every 4 batches (/proc is slow)
        for batch in range(400):
            tom.send("".join(f"{batch}.{k} {payload}\n" for k in range(64)))
            tom.read_lines_until(f"tom: {batch}.63 {payload}")
            if batch % 4 == 3:
                queued.append(send_queue(server.port, stalled.local_port))
                if len(queued) > 2 and queued[-1] == queued[-2] == queued[-3]:
                    break  # full: it did not grow over the last 8 batches
        self.assertTrue(len(queued) > 2 and queued[-1] == queued[-3],
                        f"the send queue kept growing: {queued}")
        self.assertGreater(queued[-1] or 0, 0)
        status = server.stop(signal.SIGTERM)
        self.assertEqual(status, 0)
        for client in (tom, unnamed):
            client.expect(SHUTTING_DOWN)
            client.expect_eof()
        stalled.close()


# -----------------------------------------------------------------------------
# The runner: tests in parallel, unittest's verbose output, a final count.
# -----------------------------------------------------------------------------

def all_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from all_tests(item)
        else:
            yield item


def test_cost(test):
    return getattr(getattr(test, test._testMethodName), "cost", 1)


def main(argv):
    global SERVER, REDIS_MODE
    parser = argparse.ArgumentParser(
        description="Black-box conformance suite for the chat servers.")
    parser.add_argument("server", help="server binary or .py peer")
    parser.add_argument("tests", nargs="*",
                        help="Class or Class.test_name to run")
    parser.add_argument("-k", dest="patterns", action="append",
                        help="only tests whose name contains PATTERN")
    parser.add_argument("-j", "--jobs", type=int, default=8,
                        help="tests run at once (default 8)")
    parser.add_argument("-f", "--failfast", action="store_true",
                        help="(accepted for unittest compatibility)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="(output is always verbose)")
    parser.add_argument("--redis", action="store_true",
                        help="every server with a redis-server of its own "
                        "(--redis unix:PATH --lease 2); exit 77 without "
                        "redis-server")
    options = parser.parse_args(argv)
    SERVER = os.path.abspath(options.server)
    if not os.path.exists(SERVER):
        parser.error(f"no such server: {options.server}")
    if options.redis:
        if REDIS_SERVER is None:
            print("redis-server is not installed: --redis skipped",
                  flush=True)
            return 77
        REDIS_MODE = True

    loader = unittest.TestLoader()
    if options.patterns:
        loader.testNamePatterns = [f"*{p}*" if "*" not in p else p
                                   for p in options.patterns]
    module = sys.modules[__name__]
    if options.tests:
        suite = loader.loadTestsFromNames(options.tests, module)
    else:
        suite = loader.loadTestsFromModule(module)
    tests = sorted(all_tests(suite), key=test_cost, reverse=True)

    lock = threading.Lock()

    def run(test):
        stream = io.StringIO()
        result = unittest.TextTestResult(
            unittest.runner._WritelnDecorator(stream), True, 2)
        began = time.monotonic()
        test(result)
        result.duration = time.monotonic() - began
        with lock:
            sys.stdout.write(stream.getvalue())
            sys.stdout.flush()
        return test, result

    print(f"server: {SERVER}\ntime factor: {TIME_FACTOR}, jobs: "
          f"{options.jobs}", flush=True)
    if REDIS_MODE:
        print(f"redis: a redis-server per server ({REDIS_SERVER}), "
              f"--redis unix:PATH --lease {REDIS_LEASE}", flush=True)
    print(flush=True)
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(options.jobs)
    try:
        outcomes = list(pool.map(run, tests))
    finally:  # interrupted: leave no server running
        for server in list(LIVE_SERVERS):
            server.kill()
        for redis in list(LIVE_REDIS):
            redis.kill()
            shutil.rmtree(redis.dir, ignore_errors=True)
        pool.shutdown(wait=False, cancel_futures=True)
    elapsed = time.monotonic() - started

    passed = failed = skipped = 0
    for test, result in outcomes:
        problems = result.failures + result.errors
        for kind, items in (("FAIL", result.failures),
                            ("ERROR", result.errors)):
            for failed_test, text in items:
                print("=" * 70)
                print(f"{kind}: {result.getDescription(failed_test)}")
                print("-" * 70)
                print(text)
        if problems or result.unexpectedSuccesses:
            failed += 1
        elif result.skipped:
            skipped += 1
        else:
            passed += 1
    print("-" * 70)
    slowest = sorted(outcomes, key=lambda outcome: -outcome[1].duration)[:5]
    print("Slowest: " + ", ".join(f"{test._testMethodName} "
                                  f"{result.duration:.1f}s"
                                  for test, result in slowest))
    print(f"Ran {len(tests)} tests in {elapsed:.3f}s\n")
    print("OK" if failed == 0 else f"FAILED (failed={failed})")
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 0 if failed == 0 and passed + skipped > 0 else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main(sys.argv[1:]))
