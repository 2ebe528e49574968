"""The sweep's cluster runs: a redis-server of its own, and what Redis says.

A cluster run (sweep.py --cluster K) starts, for each run, a redis-server on
a free loopback port (no persistence) and K servers of one model with
`--reuse-port --redis redis://127.0.0.1:PORT` on one port, and the load
generator connects to that port (the kernel spreads the connections). This
module holds what the sweep needs around Redis, standard library only:

  free_port()            a loopback TCP port nobody listens on now
  Redis(...)             start, ping, stop a redis-server
  RedisClient            a RESP client of the few commands needed here
  commandstats(info)     INFO commandstats, parsed: command -> calls, usec
  round_trips(a, b)      what servers asked of Redis between two samples

Redis counts the commands a Lua script runs in commandstats too (a script's
XADD is counted under xadd); the commands a server sends itself are the
scripts (EVALSHA, EVAL at first), XREAD and a few at start: ROUND_TRIP
names them, and their sum is the round trips.
"""

import os
import shutil
import socket
import subprocess
import time

# The commands the servers send themselves (not the ones their scripts run):
# one of each is one round trip to Redis.
ROUND_TRIP = ("evalsha", "eval", "xread", "script|load", "ping", "select",
              "auth", "hello", "client|setname")
ROOM = "ChatServer"  # the servers' default room name: the keys' prefix


def free_port(host="127.0.0.1"):
    """A port nobody listens on now (the kernel's pick; a race with another
    program is possible and shows as a server that cannot listen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_redis_server():
    return shutil.which("redis-server")


class RedisError(Exception):
    pass


class RedisClient:
    """One connection, one command at a time, RESP2 replies."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def command(self, *words):
        parts = [b"*%d\r\n" % len(words)]
        for word in words:
            data = word if isinstance(word, bytes) else str(word).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _line(self):
        for _ in range(100000):  # bounded: a reply line comes or recv fails
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("connection closed")
            self.buffer += chunk
        raise RedisError("no reply line")

    def _exactly(self, size):
        while len(self.buffer) < size + 2:
            chunk = self.sock.recv(max(65536, size + 2 - len(self.buffer)))
            if not chunk:
                raise RedisError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size).decode(
                "utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply()
                                           for _ in range(count)]
        raise RedisError(f"unexpected reply {line[:40]!r}")


def commandstats(info):
    """INFO commandstats's text -> {command: {"calls": n, "usec": us}}."""
    stats = {}
    for line in info.splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, fields = line[len("cmdstat_"):].partition(":")
        values = dict(field.split("=", 1) for field in fields.split(",")
                      if "=" in field)
        stats[name] = {"calls": int(values.get("calls", 0)),
                       "usec": int(values.get("usec", 0))}
    return stats


def round_trips(before, after):
    """The commands between two commandstats samples: {"evalsha": n,
    "xread": n, "round_trips": n (the ROUND_TRIP commands), "usec": Redis's
    time in every command, "by_command": {name: calls}}; None when a sample
    is missing."""
    if before is None or after is None:
        return None
    by_command = {}
    usec = 0
    for name, now in after.items():
        then = before.get(name, {"calls": 0, "usec": 0})
        calls = now["calls"] - then["calls"]
        usec += now["usec"] - then["usec"]
        if calls:
            by_command[name] = calls
    return {"evalsha": by_command.get("evalsha", 0) +
            by_command.get("eval", 0),
            "xread": by_command.get("xread", 0),
            "round_trips": sum(by_command.get(name, 0)
                               for name in ROUND_TRIP),
            "usec": usec, "by_command": by_command}


class Redis:
    """A redis-server of the sweep's own: loopback, a free port, nothing
    saved, in its own process group (the sweep stops it like a server)."""

    def __init__(self, binary, log_path, preexec_fn=None):
        self.binary = binary
        self.log_path = log_path
        self.preexec_fn = preexec_fn
        self.process = None
        self.port = None
        self.client = None

    def start(self, deadline_s=10.0, tries=5):
        """Starts it and waits until it answers PING; raises RedisError
        with its log's last words when it cannot."""
        why = "not tried"
        for _ in range(tries):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, "--port", str(self.port), "--bind",
                     "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--daemonize", "no", "--dir",
                     os.path.dirname(os.path.abspath(self.log_path))],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, preexec_fn=self.preexec_fn)
            deadline = time.monotonic() + deadline_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    why = f"exited with status {self.process.returncode}"
                    break
                try:
                    client = RedisClient(self.port, timeout=2.0)
                    if client.command("PING") == "PONG":
                        self.client = client
                        return self
                    client.close()
                except (OSError, RedisError) as error:
                    why = str(error)
                time.sleep(0.05)
            else:
                why = f"no PONG within {deadline_s:g} s"
            self.stop()
        raise RedisError(f"redis-server did not start ({why}): "
                         f"{_tail(self.log_path)}")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def commandstats(self):
        """INFO commandstats now, or None when Redis does not answer."""
        try:
            return commandstats(self.client.command("INFO", "commandstats"))
        except (OSError, RedisError, AttributeError):
            return None

    def servers_in_room(self, room=ROOM):
        """How many servers have entered the room (its servers set)."""
        return self.client.command("ZCARD", f"c10k-chat:{room}:servers")

    def stop(self, grace=5.0):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is None:
            return None
        try:
            os.killpg(self.process.pid, 15)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            status = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            status = None
        try:
            os.killpg(self.process.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        if status is None:
            try:
                status = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.process = None
        return status


def _tail(path, lines=3):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""
