#!/usr/bin/env python3
"""Bots for the classroom demo: N chat users with names, talking like people.

    python3 demo/bots.py --port 1234 --bots 1000 --rate 2

Holds up to N connections to a chat server (docs/PROTOCOL.md protocol), each a user
with a human name (ada17, linus3, ...). Together they send --rate lines per
second, human-sounding ones, so that a student on telnet sees a room that is
alive. The population moves in waves (--wave seconds, between --low x N and
N) and a few users leave and come back all the time, so the server's
process or thread count grows and shrinks. Every bot reads everything it is
sent (a bot that stopped reading would be dropped as a slow client).

Several servers sharing one room (demo/classroom.sh cluster): --port takes
a comma list, and each new bot connects to the server with the fewest bots
(a server that refuses is left alone for a few seconds, so that when one is
killed its bots come back on the others). With --tags, one per port, each
bot's name says its server: ada17@forking, linus3@evented.

One thread, one epoll loop (selectors), standard library only. Bounded:
--duration seconds (0 = until SIGINT/SIGTERM), then every bot says QUIT.
A status line goes to standard output every few seconds.
"""

import argparse
import errno
import math
import os
import random
import resource
import selectors
import signal
import socket
import sys
import time

NAMES = """ada alan barbara brian claude dennis donald edsger frances grace
hedy ivan joan ken linus margaret niklaus radia rasmus rob sophie tim
whitfield yukihiro guido bjarne anders james larry katherine mary annie
jean kathleen leslie butler fernando john lynn shafi silvio vint bob
adele carol dana erin fiona gus hal iris jack kim leo mia nora oscar pat
quinn rosa sam tara uma vera walt xena yann zoe""".split()

LINES = [
    "hi all", "hello everyone", "morning!", "hey {other}", "o/",
    "anyone here tried chat-forking?", "how many users are in here now?",
    "brb, coffee", "back", "lol", "that is a lot of processes",
    "is this the evented one or the threaded one?", "+1",
    "{other}: agreed", "{other}: what do you mean?",
    "the lecture is about C10K, right?", "who wrote this server?",
    "select, poll, epoll... so many loops", "I/O is slow, CPUs are fast",
    "one process per connection sounds expensive", "threads share the heap",
    "event loops never block", "what does fdatasync cost on this box?",
    "a context switch is microseconds", "nice", "ok", "sounds good",
    "see you later", "wait, who just left?", "welcome {other}!",
    "does anyone know the homework?", "I think the answer is epoll",
    "try NAMES to see who is here", "how do I leave? type QUIT",
    "the room is busy today", "{other} is typing a lot",
    "has anyone measured the memory per connection?",
    "PSS, not RSS: shared pages count once", "ten thousand clients!",
    "my laptop has 8 cores, does it matter?", "coffee time", "hmm",
    "this is like IRC in 1995", "telnet still works, wow",
]

LEAVING = ["bye", "gotta go", "see you", "later all", "off to class"]


class Bot:
    __slots__ = ("name", "sock", "state", "inbox", "outbox", "joined_at",
                 "port")

    def __init__(self, name, sock, port):
        self.name = name
        self.sock = sock
        self.port = port
        self.state = "connecting"  # -> naming -> chatting -> leaving
        self.inbox = b""
        self.outbox = b""
        self.joined_at = 0.0


class Crowd:
    def __init__(self, config):
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.bots = {}  # socket -> Bot
        self.chatting = []  # bots in the room, for picking a sender
        self.used_names = set()
        self.started = time.monotonic()
        self.sent = 0
        self.joined = 0
        self.left = 0
        self.refused = 0
        self.dropped = 0
        self.last_refusal = ""
        self.pause_until = {port: 0.0 for port in config.ports}  # after a
        # refusal, connecting to that server waits a while
        self.next_line = self.started
        self.stopping = False
        self.random = random.Random(config.seed)

    # -- population ---------------------------------------------------------

    def target(self, now):
        """How many bots there should be now: N, dipping in waves."""
        n = self.config.bots
        if self.config.wave <= 0:
            return n
        phase = (now - self.started) / self.config.wave * 2 * math.pi
        dip = (1 - math.cos(phase)) / 2  # 0 .. 1 .. 0 over one wave
        return round(n - dip * (1 - self.config.low) * n)

    def new_name(self, port=None):
        tag = self.config.tag_of.get(port)
        suffix = f"@{tag}" if tag else ""
        for _ in range(1000):
            name = (f"{self.random.choice(NAMES)}"
                    f"{self.random.randrange(100)}{suffix}")
            if name not in self.used_names:
                return name
        return f"bot{self.random.randrange(10 ** 9)}{suffix}"

    def refused_one(self, why, port):
        self.refused += 1
        self.last_refusal = why
        # One server: try again in a second. Several: that one may be gone
        # (killed in the demo); the others take the newcomers meanwhile.
        self.pause_until[port] = time.monotonic() + (
            1.0 if len(self.config.ports) == 1 else 5.0)

    def pick_port(self, now):
        """The server with the fewest bots, of those not refusing now."""
        counts = {port: 0 for port in self.config.ports}
        for bot in self.bots.values():
            counts[bot.port] = counts.get(bot.port, 0) + 1
        ready = [port for port in self.config.ports
                 if now >= self.pause_until[port]]
        if not ready:
            return None
        return min(ready, key=lambda port: counts[port])

    def connect_one(self):
        port = self.pick_port(time.monotonic())
        if port is None:
            return False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        result = sock.connect_ex((self.config.host, port))
        if result not in (0, errno.EINPROGRESS):
            sock.close()
            self.refused_one(os.strerror(result), port)
            return False
        bot = Bot(self.new_name(port), sock, port)
        self.used_names.add(bot.name)
        self.bots[sock] = bot
        self.selector.register(sock, selectors.EVENT_READ |
                               selectors.EVENT_WRITE, bot)
        return True

    def adjust(self, now, dt):
        """Connects or sends away bots toward the target, at most
        --connect-rate per second either way, plus a trickle of churn."""
        alive = len(self.bots) - sum(1 for b in self.chatting
                                     if b.state == "leaving")
        want = self.target(now)
        budget = max(1, int(self.config.connect_rate * dt))
        if alive < want and not self.stopping:
            for _ in range(min(budget, want - alive)):
                if not self.connect_one():
                    break
        elif alive > want:
            for _ in range(min(budget, alive - want)):
                self.leave_random()
        # churn: somebody leaves (and the wave brings somebody back)
        if self.chatting and self.random.random() < self.config.churn * dt:
            self.leave_random()

    def leave_random(self):
        candidates = [b for b in self.chatting if b.state == "chatting"]
        if not candidates:
            return
        bot = self.random.choice(candidates)
        if self.random.random() < 0.5:
            self.send(bot, self.random.choice(LEAVING))
        bot.outbox += b"QUIT\r\n"
        bot.state = "leaving"
        self.want_write(bot)

    # -- talking --------------------------------------------------------------

    def talk(self, now):
        """Sends lines at --rate per second in total (Poisson spacing)."""
        rate = self.config.rate
        while rate > 0 and now >= self.next_line:
            self.next_line += self.random.expovariate(rate)
            speakers = [b for b in self.chatting if b.state == "chatting"]
            if not speakers:
                continue
            bot = self.random.choice(speakers)
            other = self.random.choice(speakers).name
            self.send(bot, self.random.choice(LINES).format(other=other))
        if rate > 0 and self.next_line < now - 5:
            self.next_line = now  # we fell behind: do not burst

    def send(self, bot, text):
        bot.outbox += text.encode() + b"\r\n"
        self.sent += 1
        self.want_write(bot)

    def want_write(self, bot):
        try:
            self.selector.modify(bot.sock, selectors.EVENT_READ |
                                 selectors.EVENT_WRITE, bot)
        except (KeyError, ValueError):
            pass

    # -- the socket side ------------------------------------------------------

    def close(self, bot, dropped=False):
        try:
            self.selector.unregister(bot.sock)
        except (KeyError, ValueError):
            pass
        bot.sock.close()
        self.bots.pop(bot.sock, None)
        if bot in self.chatting:
            self.chatting.remove(bot)
            self.left += 1
        self.used_names.discard(bot.name)
        if dropped:
            self.dropped += 1

    def on_readable(self, bot):
        failure = None
        try:
            data = bot.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            data = b""
            failure = error
        if not data:
            if bot.state == "connecting" and not bot.inbox:
                # Never connected (a server that is gone refuses): not a
                # bot the server cut off; leave that server alone a while.
                self.refused_one(
                    os.strerror(failure.errno) if failure and failure.errno
                    else "closed before the welcome", bot.port)
                self.close(bot)
                return
            self.close(bot, dropped=bot.state != "leaving")
            return
        if bot.state == "chatting" or bot.state == "leaving":
            return  # read and forget: the room's lines are for humans
        bot.inbox += data
        if bot.state == "connecting" or bot.state == "naming":
            if b"Enter user name: " in bot.inbox and bot.state == "connecting":
                bot.state = "naming"
                bot.outbox += bot.name.encode() + b"\r\n"
                self.want_write(bot)
            if f"User {bot.name} arrived.".encode() in bot.inbox:
                bot.state = "chatting"
                bot.joined_at = time.monotonic()
                bot.inbox = b""
                self.chatting.append(bot)
                self.joined += 1
            elif b"not available" in bot.inbox:
                self.used_names.discard(bot.name)
                bot.name = self.new_name(bot.port)
                self.used_names.add(bot.name)
                bot.inbox = b""
                bot.outbox += bot.name.encode() + b"\r\n"
                self.want_write(bot)
            elif b"Server full" in bot.inbox:
                self.refused_one("server full", bot.port)
                self.close(bot)
            elif b"Room unavailable" in bot.inbox:
                # The server cannot reach the room (Redis is gone): wait.
                self.refused_one("room unavailable", bot.port)
                self.close(bot)
            elif len(bot.inbox) > 65536:
                bot.inbox = bot.inbox[-4096:]

    def on_writable(self, bot):
        if bot.state == "connecting" and not bot.outbox:
            error = bot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.refused_one(os.strerror(error), bot.port)
                self.close(bot)
                return
        if bot.outbox:
            try:
                n = bot.sock.send(bot.outbox)
                bot.outbox = bot.outbox[n:]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(bot, dropped=True)
                return
        if not bot.outbox:
            try:
                self.selector.modify(bot.sock, selectors.EVENT_READ, bot)
            except (KeyError, ValueError):
                pass

    # -- the loop -----------------------------------------------------------

    def status(self, now):
        naming = sum(1 for b in self.bots.values()
                     if b.state in ("connecting", "naming"))
        line = (f"{time.strftime('%H:%M:%S')} bots: {len(self.chatting)} in "
                f"the room (target {self.target(now)}), {naming} joining; "
                f"{self.joined} joined, {self.left} left, {self.sent} lines "
                f"sent")
        if len(self.config.ports) > 1:
            counts = {}
            for bot in self.chatting:
                counts[bot.port] = counts.get(bot.port, 0) + 1
            line += " (" + ", ".join(
                f"{self.config.tag_of.get(port) or port} "
                f"{counts.get(port, 0)}" for port in self.config.ports) + ")"
        if self.refused:
            line += f"; {self.refused} refused ({self.last_refusal})"
        if self.dropped:
            line += f"; {self.dropped} cut off by the server"
        print(line, flush=True)

    def run(self):
        deadline = (self.started + self.config.duration
                    if self.config.duration > 0 else None)
        last_tick = last_status = time.monotonic()
        stop_at = None
        while True:
            now = time.monotonic()
            if not self.stopping and (
                    STOP or (deadline is not None and now >= deadline)):
                self.stopping = True
                stop_at = now
                for bot in list(self.bots.values()):
                    if bot.state == "chatting":
                        bot.outbox += b"QUIT\r\n"
                        bot.state = "leaving"
                        self.want_write(bot)
                    elif bot.state in ("connecting", "naming"):
                        self.close(bot)
            if self.stopping and (not self.bots or now - stop_at > 3):
                break
            for key, events in self.selector.select(timeout=0.05):
                bot = key.data
                if bot.sock not in self.bots:
                    continue
                if events & selectors.EVENT_READ:
                    self.on_readable(bot)
                if bot.sock in self.bots and events & selectors.EVENT_WRITE:
                    self.on_writable(bot)
            now = time.monotonic()
            dt = now - last_tick
            if dt >= 0.1:
                last_tick = now
                if not self.stopping:
                    self.adjust(now, dt)
                    self.talk(now)
            if now - last_status >= self.config.status_every:
                last_status = now
                self.status(now)
        for bot in list(self.bots.values()):
            self.close(bot)
        self.status(time.monotonic())


STOP = False


def on_signal(signum, frame):
    global STOP
    STOP = True


def main():
    parser = argparse.ArgumentParser(
        description="Chat bots for the classroom demo (see demo/README.md).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="1234",
                        help="the server's port, or a comma list of the "
                             "ports of servers sharing one room")
    parser.add_argument("--tags", default="",
                        help="comma list, one per port: bots on that "
                             "server are named NAME@TAG (e.g. "
                             "forking,threaded,evented,coroutine)")
    parser.add_argument("--bots", type=int, default=100,
                        help="bots at the top of a wave (default 100)")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="lines per second from all bots together "
                             "(default 2: readable)")
    parser.add_argument("--wave", type=float, default=60.0,
                        help="seconds per wave of leaving and coming back "
                             "(default 60; 0: a steady crowd)")
    parser.add_argument("--low", type=float, default=0.5,
                        help="the bottom of a wave, as a share of --bots "
                             "(default 0.5)")
    parser.add_argument("--churn", type=float, default=0.5,
                        help="random departures per second besides the "
                             "waves (default 0.5)")
    parser.add_argument("--connect-rate", type=float, default=200.0,
                        help="most connections opened (or closed) per "
                             "second (default 200)")
    parser.add_argument("--duration", type=float, default=0,
                        help="stop after this many seconds (default: run "
                             "until SIGINT or SIGTERM)")
    parser.add_argument("--status-every", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    config = parser.parse_args()
    if config.bots < 0 or config.rate < 0 or not 0 <= config.low <= 1:
        parser.error("--bots and --rate must be >= 0, --low in 0..1")
    try:
        config.ports = [int(p) for p in config.port.split(",") if p]
    except ValueError:
        parser.error(f"--port wants a port or a comma list: {config.port}")
    if not config.ports or any(not 0 < p < 65536 for p in config.ports):
        parser.error(f"--port: ports are 1 to 65535: {config.port}")
    tags = [t for t in config.tags.split(",") if t] if config.tags else []
    if tags and len(tags) != len(config.ports):
        parser.error("--tags wants one tag per port")
    if any(not t.isprintable() or " " in t or ":" in t or len(t) > 12
           for t in tags):
        parser.error("--tags: up to 12 characters each, no spaces or "
                     "colons (they end up in user names)")
    config.tag_of = dict(zip(config.ports, tags))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < config.bots + 64:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < config.bots + 64:
            print(f"bots: only {soft} file descriptors; fewer bots will "
                  "connect", file=sys.stderr)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    print(f"bots: up to {config.bots} bots on {config.host}:"
          f"{','.join(map(str, config.ports))}, "
          f"{config.rate:g} lines/s, waves of {config.wave:g} s", flush=True)
    Crowd(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
