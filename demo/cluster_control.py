#!/usr/bin/env python3
"""The control pane of the classroom demo's "one room, four models" mode.

    python3 demo/cluster_control.py --redis-port P --room ClassRoom \\
        --lease 5 --bin-dir build/bin --server forking:PID:PORT[:TAG] ...

Shows, every second, each server of the room (its model, pid, port, how
many users are connected to it, its tasks and CPU) and the room as Redis
holds it (users, live servers). Keys, in this pane:

  1-9      SIGKILL that server: its users are cut off; everyone else sees
           them depart once the lease has passed, and this pane measures
           when (from the room's stream in Redis: the departures of the
           names tagged @MODEL, the bots' names on that server)
  r, 1-9   start that server again (same command line); it joins the room
  q        stop watching (the demo goes on; leave tmux with Ctrl-b d)

A server killed from elsewhere (kill -KILL PID) is noticed too. A restarted
server's pid is appended to --pidfile, so that the demo stops it at the
end. Standard library only; reads /proc and speaks RESP to Redis.
"""

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import tty

TICKS = os.sysconf("SC_CLK_TCK")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class Redis:
    """One connection, one command at a time (RESP2)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.buffer = b""

    def command(self, *words):
        out = [b"*%d\r\n" % len(words)]
        for word in words:
            data = str(word).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def line(self):
        for _ in range(10000):
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("Redis closed the connection")
            self.buffer += chunk
        raise OSError("no reply from Redis")

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("Redis closed the connection")
                self.buffer += chunk
            data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise OSError(f"unexpected reply from Redis: {line[:40]!r}")


def connections(port):
    """ESTABLISHED TCP connections whose local port is `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read(table) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def tree(pid):
    """The pids of pid and its descendants."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        text = read(f"/proc/{name}/stat")
        if text:
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def alive(pid):
    """Running, not a zombie waiting to be reaped."""
    text = read(f"/proc/{pid}/stat")
    return bool(text) and text[text.rindex(")") + 2] not in "ZX"


def usage(pid):
    """(tasks, CPU ticks) of the tree."""
    tasks = ticks = 0
    for p in tree(pid):
        text = read(f"/proc/{p}/stat")
        if not text:
            continue
        fields = text[text.rindex(")") + 2:].split()
        tasks += int(fields[17])
        ticks += int(fields[11]) + int(fields[12])
    return tasks, ticks


class Server:
    def __init__(self, number, model, pid, port, tag=None):
        self.number = number
        self.model = model
        self.tag = tag or model  # its bots are named NAME@TAG
        self.pid = pid
        self.port = port
        self.state = "serving" if alive(pid) else "gone"
        self.users = 0
        self.tasks = 0
        self.ticks = None
        self.cpu = 0.0


class Watch:
    """The departures of a killed server's users, from the room's stream:
    each entry's id is the time Redis appended it (ms, Redis's clock), so
    its delay is measured against Redis's clock at the kill, not against
    when this pane looked."""

    def __init__(self, server, users, now, redis_ms):
        self.server = server
        self.users = users
        self.started = now
        self.redis_ms = redis_ms  # Redis's TIME at the kill; None: unknown
        self.seen = []  # seconds after the kill

    def done(self, lease, now):
        return (len(self.seen) >= self.users or
                now - self.started > lease + 5)


class Control:
    def __init__(self, config):
        self.config = config
        self.servers = []
        for number, spec in enumerate(config.server, 1):
            model, pid, port, *tag = spec.split(":")
            self.servers.append(Server(number, model, int(pid), int(port),
                                       tag[0] if tag else None))
        self.redis = None
        self.stream = f"c10k-chat:{config.room}:stream"
        self.last_id = "$"
        self.events = []
        self.watches = []
        self.pending_restart = False
        self.room_users = self.room_servers = None
        self.last_sample = time.monotonic()

    def say(self, text):
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        del self.events[:-8]

    def connect(self):
        try:
            self.redis = Redis(self.config.redis_port)
            if self.last_id == "$":
                # Start from the stream's end: only what happens from now.
                last = self.redis.command("XREVRANGE", self.stream, "+", "-",
                                          "COUNT", "1")
                self.last_id = last[0][0] if last else "0-0"
        except OSError as error:
            self.redis = None
            self.room_users = None
            return str(error)
        return None

    def poll_room(self, now):
        if self.redis is None and self.connect():
            return
        try:
            self.room_users = self.redis.command(
                "HLEN", f"c10k-chat:{self.config.room}:names")
            self.room_servers = self.redis.command(
                "ZCARD", f"c10k-chat:{self.config.room}:servers")
            for _ in range(20):  # bounded: at most 20,000 lines a turn
                reply = self.redis.command("XREAD", "COUNT", "1000",
                                           "STREAMS", self.stream,
                                           self.last_id)
                if not reply:
                    break
                for entry_id, fields in reply[0][1]:
                    self.last_id = entry_id
                    entry = dict(zip(fields[::2], fields[1::2]))
                    if entry.get("k") == "d":
                        self.departed(entry.get("n", ""), entry_id, now)
        except OSError as error:
            self.say(f"Redis: {error}")
            self.redis = None

    def departed(self, name, entry_id, now):
        for watch in self.watches:
            if name.endswith("@" + watch.server.tag):
                at_ms = int(entry_id.split("-")[0])
                watch.seen.append((at_ms - watch.redis_ms) / 1000
                                  if watch.redis_ms is not None
                                  else now - watch.started)
                return

    def redis_now_ms(self):
        """Redis's clock (TIME), in ms; None when Redis does not answer."""
        try:
            if self.redis is None and self.connect():
                return None
            seconds, micros = self.redis.command("TIME")
            return int(seconds) * 1000 + int(micros) // 1000
        except (OSError, ValueError, TypeError):
            self.redis = None
            return None

    def sample(self, now):
        dt = now - self.last_sample
        self.last_sample = now
        for server in self.servers:
            if server.state == "serving" and not alive(server.pid):
                server.state = "gone"
                self.say(f"chat-{server.model} (pid {server.pid}) is gone "
                         f"(killed from elsewhere?)")
                self.watch(server, now)
            if server.state != "serving":
                server.users = server.tasks = 0
                server.cpu = 0.0
                continue
            server.users = connections(server.port)
            tasks, ticks = usage(server.pid)
            server.tasks = tasks
            if server.ticks is not None and dt > 0:
                server.cpu = (ticks - server.ticks) / TICKS / dt
            server.ticks = ticks
        self.poll_room(now)
        for watch in list(self.watches):
            if watch.done(self.config.lease, now):
                self.watches.remove(watch)
                name = f"chat-{watch.server.model}"
                if watch.seen:
                    self.say(f"{len(watch.seen)} departures of @"
                             f"{watch.server.tag} users in the room, "
                             f"{min(watch.seen):.2f} to {max(watch.seen):.2f}"
                             f" s after {name} died (Redis's clock; lease "
                             f"{self.config.lease:g} s)")
                else:
                    self.say(f"no departure of @{watch.server.tag} users "
                             f"seen within {self.config.lease + 5:g} s of "
                             f"{name}'s death")

    def watch(self, server, now):
        self.watches.append(Watch(server, server.users, now,
                                  self.redis_now_ms()))

    def kill(self, server):
        if server.state != "serving":
            self.say(f"chat-{server.model} is not running")
            return
        users = connections(server.port)
        server.users = users
        self.poll_room(time.monotonic())  # the stream up to the kill
        try:
            os.kill(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        now = time.monotonic()
        server.state = "killed"
        self.say(f"SIGKILL to chat-{server.model} (pid {server.pid}) with "
                 f"{users} connection(s): the others should see them depart "
                 f"within {self.config.lease:g} s")
        self.watch(server, now)

    def restart(self, server):
        if server.state == "serving":
            self.say(f"chat-{server.model} is running already")
            return
        argv = [os.path.join(self.config.bin_dir, f"chat-{server.model}"),
                self.config.room, str(server.port), "--redis",
                f"redis://127.0.0.1:{self.config.redis_port}", "--lease",
                f"{self.config.lease:g}", "--login-timeout", "0"]
        log = os.path.join(self.config.log_dir,
                           f"server-{server.number}-{server.model}.log")
        try:
            with open(log, "ab") as err:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=err, start_new_session=True)
        except OSError as error:
            self.say(f"cannot start chat-{server.model}: {error}")
            return
        line = b""
        deadline = time.monotonic() + 10
        while b"\n" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(process.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
        if b"running on port" not in line:
            self.say(f"chat-{server.model} did not start (see {log})")
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
            return
        server.pid = process.pid
        server.state = "serving"
        server.ticks = None
        self.children.append(process)
        if self.config.pidfile:
            with open(self.config.pidfile, "a") as f:
                f.write(f"{process.pid}\n")
        self.say(f"chat-{server.model} started again (pid {process.pid}); "
                 f"it joins the room")

    def key(self, char):
        if self.pending_restart:
            self.pending_restart = False
            if char.isdigit() and 1 <= int(char) <= len(self.servers):
                self.restart(self.servers[int(char) - 1])
            return
        if char.isdigit() and 1 <= int(char) <= len(self.servers):
            self.kill(self.servers[int(char) - 1])
        elif char in "rR":
            self.pending_restart = True
            self.say("restart which server? (1-9)")
        elif char in "qQ":
            raise SystemExit(0)

    def render(self):
        out = ["\x1b[H\x1b[J"]
        where = f"redis://127.0.0.1:{self.config.redis_port}"
        out.append(f"One room '{self.config.room}', {len(self.servers)} "
                   f"servers, one Redis ({where}), lease "
                   f"{self.config.lease:g} s\n\n")
        out.append(f"  {'#':<2} {'server':<16} {'pid':>7} {'port':>6} "
                   f"{'state':<8} {'users':>6} {'tasks':>6} {'CPU':>6}\n")
        for s in self.servers:
            out.append(f"  {s.number:<2} {'chat-' + s.model:<16} "
                       f"{s.pid:>7} {s.port:>6} {s.state:<8} {s.users:>6} "
                       f"{s.tasks:>6} {100 * s.cpu:>5.0f}%\n")
        if self.room_users is None:
            out.append("\n  the room (Redis): not reachable\n")
        else:
            out.append(f"\n  the room (Redis): {self.room_users} users, "
                       f"{self.room_servers} live servers\n")
            serving = sum(1 for s in self.servers if s.state == "serving")
            if self.room_servers is not None and \
                    self.room_servers < serving:
                alone = serving - self.room_servers
                out.append(f"  {alone} server{'s' if alone > 1 else ''} "
                           f"running but not in the room: "
                           f"{'they serve rooms' if alone > 1 else 'it serves a room'}"
                           f" of {'their' if alone > 1 else 'its'} own "
                           f"(no --redis support yet?)\n")
        out.append("\n  keys here: 1-" + str(len(self.servers)) +
                   " kill that server (SIGKILL)   r then 1-" +
                   str(len(self.servers)) + " start it again   q quit "
                   "this pane\n\n")
        for event in self.events:
            out.append(f"  {event}\n")
        sys.stdout.write("".join(out))
        sys.stdout.flush()

    def run(self):
        self.children = []
        interactive = sys.stdin.isatty()
        saved = termios.tcgetattr(sys.stdin) if interactive else None
        if interactive:
            tty.setcbreak(sys.stdin.fileno())
        deadline = (time.monotonic() + self.config.duration
                    if self.config.duration > 0 else None)
        try:
            next_tick = 0.0
            while deadline is None or time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_tick:
                    self.sample(now)
                    self.render()
                    next_tick = now + self.config.interval
                wait = max(0.0, min(0.2, next_tick - time.monotonic()))
                if interactive:
                    ready, _, _ = select.select([sys.stdin], [], [], wait)
                    if ready:
                        char = os.read(sys.stdin.fileno(), 1).decode(
                            errors="replace")
                        if not char:
                            interactive = False
                            continue
                        self.key(char)
                        self.render()
                else:
                    time.sleep(wait)
        finally:
            if saved is not None:
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def main():
    parser = argparse.ArgumentParser(
        description="The control pane of demo/classroom.sh cluster.")
    parser.add_argument("--server", action="append", required=True,
                        metavar="MODEL:PID:PORT[:TAG]",
                        help="a server of the room; its bots are named "
                             "NAME@TAG (default TAG: MODEL)")
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--room", default="ClassRoom")
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--bin-dir", default="build/bin")
    parser.add_argument("--log-dir", default=".")
    parser.add_argument("--pidfile", default=None)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (default: on q)")
    config = parser.parse_args()
    if len(config.server) > 9:
        parser.error("at most 9 servers (one key each)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    try:
        Control(config).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
