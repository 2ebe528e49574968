#!/usr/bin/env python3
"""The talk's asyncio ChatServer, grown into a full implementation of docs/PROTOCOL.md.

One event loop, one Protocol object per connection, one ChatRoom holding the
registered users in registration order. Compared with the talk's version:

- lines are framed on bytes (LF, CR LF, CR NUL), with telnet commands removed
  by a state machine that survives packet boundaries, and a length limit that
  discards an overlong line instead of storing it;
- every bad line gets a clear notice (too long, invalid UTF-8, control
  characters) and the connection carries on;
- names are validated, commands are case-insensitive, QUIT and HELP exist;
- a client that stops reading is dropped once --max-backlog bytes are queued
  for it, so nobody waits for it; departures are announced exactly once;
- --max-clients, --login-timeout, SIGINT/SIGTERM/SIGHUP shutdown;
- a log that never waits (a full pipe nobody reads drops lines, and counts
  them), and accepting that pauses while descriptors run short.

Same command line, messages, log lines and exit codes as the C servers
(chat-evented, chat-coroutine, chat-threaded, chat-forking; common/options.c,
common/utf8.c, common/os/log.c). Python 3.11, standard library only.
"""

import asyncio
import errno
import functools
import getopt
import logging
import os
import platform
import re
import resource
import select
import selectors
import signal
import socket
import stat
import sys
import time
import types

VERSION = "1.0.0"
EOL = b"\r\n"
PROMPT = b"Enter user name: "
INVALID_NAME = (b"Invalid user name: use 1-32 characters, no spaces, "
                b"colons or control characters\r\n")
NOT_AVAILABLE = b"Username %s not available\r\n"
TOO_LONG = b"Line ignored: longer than %d bytes\r\n"
INVALID_UTF8 = b"Line ignored: invalid UTF-8\r\n"
CONTROL_CHARACTERS = b"Line ignored: control characters are not allowed\r\n"
HELP = (b"Commands: NAMES lists who is here, QUIT leaves, anything else is "
        b"sent to everyone\r\n")
BYE = b"Bye.\r\n"
SERVER_FULL = b"Server full, try again later\r\n"
TIMED_OUT = b"Timed out waiting for a user name\r\n"
SHUTTING_DOWN = b"Server shutting down\r\n"

# Telnet (RFC 854): the bytes we must recognise.
IAC, SB, SE = 255, 250, 240
WILL, WONT, DO, DONT = 251, 252, 253, 254
# States of the telnet filter.
T_DATA, T_IAC, T_OPTION, T_SUB, T_SUB_IAC = range(5)

LINE_END = re.compile(rb"[\r\n]")
# Control characters (common/utf8.c), matched in the decoded text: below
# U+0020, U+007F, the C1 controls U+0080-U+009F (U+009B is a terminal's CSI)
# and the bidirectional overrides and isolates U+202A-U+202E, U+2066-U+2069.
CONTROL_IN_MESSAGE = re.compile(  # TAB allowed
    r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
CONTROL_IN_NAME = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SHUTDOWN_GRACE = 1.0  # seconds to flush goodbyes before closing by force
ACCEPT_RETRY = 0.25  # out of descriptors: accept again after this, at most
ACCEPT_BATCH = 64  # connections accepted in a row before the others' turn
# accept() failed for want of descriptors or memory: pause, not spin.
EXHAUSTION = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# accept() failed for this connection alone: take the next.
TRANSIENT = (errno.EINTR, errno.ECONNABORTED, errno.EPERM, errno.EPROTO)
LOG_LINE_MAX = 512  # bytes in a log line, its end included


class Log:
    """The log on standard error, which never waits (common/os/log.c).

    A full pipe nobody reads or a stopped terminal must not stall the event
    loop, so a line is written at once or not at all: a pipe or terminal is
    opened again through /proc/self/fd/2 with O_NONBLOCK (a description of
    our own: O_NONBLOCK on descriptor 2 would change it for everyone sharing
    it), a socket is sent to with MSG_DONTWAIT, anything else is written
    when poll says it can take data. A line that cannot go now is dropped
    and counted; the next one that goes carries the count, in one write.
    """

    def __init__(self, quiet):
        self.quiet = quiet
        self.dropped = 0  # lines not written since the last one that was
        self.fd = 2
        self.write = self.write_polled
        if quiet:
            return
        try:
            mode = os.fstat(2).st_mode
        except OSError:
            return  # closed: every write fails, and is counted
        if stat.S_ISSOCK(mode):
            sock = socket.socket(fileno=os.dup(2))
            self.write = lambda data: sock.send(data, socket.MSG_DONTWAIT)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            try:  # fails without /proc, or for a pipe with no reader
                fd = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK
                             | os.O_NOCTTY | os.O_APPEND)
            except OSError:
                return
            self.fd = fd
            self.write = functools.partial(os.write, fd)
            if os.isatty(fd):  # `stty tostop` would stop us at each line
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)

    def write_polled(self, data):
        can_write = select.poll()
        can_write.register(self.fd, select.POLLOUT)
        if not can_write.poll(0):
            return 0
        return os.write(self.fd, data)

    def __call__(self, text):
        """One line: ISO 8601 UTC time, then the text; never a wait."""
        if self.quiet:
            return
        line = (timestamp() + text).encode(errors="replace")
        data = line[:LOG_LINE_MAX - 1] + b"\n"
        if self.dropped:
            data = (f"{timestamp()}{self.dropped} log line"
                    f"{'' if self.dropped == 1 else 's'} dropped: standard "
                    f"error could not take them at once\n").encode() + data
        try:
            written = self.write(data)
        except OSError:
            written = 0
        self.dropped = 0 if written == len(data) else self.dropped + 1


def timestamp():
    """"2026-12-03T06:44:45.123Z ": the start of every log line."""
    now = time.time()
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + ".%03dZ " % (now % 1 * 1000))


def valid_name(name):
    """1 to 32 characters (code points), no space, colon or control
    character; the name is known to be valid UTF-8."""
    text = name.decode("utf-8")
    return (1 <= len(text) <= 32 and " " not in text and ":" not in text
            and not CONTROL_IN_NAME.search(text))


def peer_name(address):
    """"127.0.0.1:5000" or "[::1]:5000", as the C servers log a peer."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def show(name):
    return name.decode("utf-8")


class ChatRoom:
    """The registered users, in the order they registered, and the fan-out."""

    def __init__(self, config):
        self.config = config
        self.users = {}  # name (bytes) -> Protocol, in registration order
        self.connections = set()  # every open Protocol, registered or not
        self.shutting_down = False

    def register(self, name, protocol):
        self.users[name] = protocol
        self.broadcast(b"User %s arrived.\r\n" % name)

    def deregister(self, name):
        """Announce a departure; a no-op when the name already left."""
        if self.users.pop(name, None) is not None and not self.shutting_down:
            self.broadcast(b"User %s departed.\r\n" % name)

    def message_from(self, name, line):
        self.broadcast(name + b": " + line + EOL)

    def broadcast(self, data):
        """Queue data for every user; drop those too far behind.

        A user is dropped only after the loop, so everybody else receives this
        line before the departure it causes: one order for all.
        """
        too_slow = []
        for protocol in list(self.users.values()):
            if not protocol.send(data):
                too_slow.append(protocol)
        for protocol in too_slow:
            protocol.drop_slow()


class Protocol(asyncio.Protocol):
    """One connection: telnet filter, line framer, then the session."""

    def __init__(self, room, peer, acceptor):
        self.room = room
        self.config = room.config
        self.acceptor = acceptor
        self.transport = None
        self.peer = peer
        self.username = None
        self.closing = False
        self.login_timer = None
        # Framer state: the unfinished line and whether we are inside a line
        # that was too long (then its bytes are dropped until the line end).
        self.partial = bytearray()
        self.discarding = False
        self.after_cr = False
        self.telnet_state = T_DATA
        self.telnet_command = 0

    # -- connection events -------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        if len(self.room.connections) >= self.config.max_clients:
            self.config.log(f"{self.peer} refused: server full")
            self.closing = True
            transport.write(SERVER_FULL)
            transport.close()
            return
        self.room.connections.add(self)
        self.config.log(f"{self.peer} connected")
        if self.room.shutting_down:  # accepted just before the signal
            return self.say_goodbye()
        transport.write(b"Welcome to %s\r\n" % self.config.name + PROMPT)
        if self.config.login_timeout > 0:
            self.login_timer = asyncio.get_running_loop().call_later(
                self.config.login_timeout, self.login_timed_out)

    def connection_lost(self, exc):
        self.acceptor.connection_closed()  # a descriptor is about to be free
        if self not in self.room.connections:
            return  # a refused connection
        self.room.connections.discard(self)
        if self.login_timer:
            self.login_timer.cancel()
        self.leave("closed")  # also after a reset or an error

    def eof_received(self):
        # Half-close: the lines already received were handled in
        # data_received; now the user departs and we close our side.
        self.leave("closed")
        return False  # asyncio closes the transport after flushing

    def data_received(self, chunk):
        """Telnet commands out, data runs to the line framer."""
        i, n = 0, len(chunk)
        while i < n and not self.closing:
            if self.telnet_state == T_DATA:
                j = chunk.find(IAC, i)
                if j < 0:
                    j = n
                self.frame(chunk[i:j])
                if j < n:
                    self.telnet_state = T_IAC
                i = j + 1
            else:
                self.telnet_byte(chunk[i])
                i += 1

    # -- telnet ------------------------------------------------------------

    def telnet_byte(self, byte):
        """One byte inside a telnet command; we refuse every option."""
        state = self.telnet_state
        if state == T_IAC:
            if byte == IAC:  # IAC IAC: a data byte 255
                self.telnet_state = T_DATA
                self.frame(b"\xff")
            elif byte >= WILL:  # WILL, WONT, DO, DONT: an option follows
                self.telnet_command = byte
                self.telnet_state = T_OPTION
            elif byte == SB:
                self.telnet_state = T_SUB
            else:  # any other command or byte: both dropped
                self.telnet_state = T_DATA
        elif state == T_OPTION:
            self.telnet_state = T_DATA
            if self.telnet_command == DO:
                self.transport.write(bytes((IAC, WONT, byte)))
            elif self.telnet_command == WILL:
                self.transport.write(bytes((IAC, DONT, byte)))
        elif state == T_SUB:
            if byte == IAC:
                self.telnet_state = T_SUB_IAC
        else:  # T_SUB_IAC: IAC SE ends the subnegotiation
            self.telnet_state = T_DATA if byte == SE else T_SUB

    # -- line framing --------------------------------------------------------

    def frame(self, data):
        """Split telnet-free bytes into lines at LF, CR LF and CR NUL."""
        i, n = 0, len(data)
        while i < n and not self.closing:
            if self.after_cr:
                self.after_cr = False
                if data[i] in (0x0A, 0x00):  # CR LF or CR NUL
                    i += 1
                    self.end_line()
                    continue
                self.add(b"\r")  # the CR was data after all
            match = LINE_END.search(data, i)
            end = match.start() if match else n
            self.add(data[i:end])
            if not match:
                break
            i = end + 1
            if data[end] == 0x0A:
                self.end_line()
            else:
                self.after_cr = True

    def add(self, data):
        if self.discarding or not data:
            return
        if len(self.partial) + len(data) > self.config.max_line:
            self.partial.clear()
            self.discarding = True
            self.notice(TOO_LONG % self.config.max_line)
        else:
            self.partial += data

    def end_line(self):
        if self.discarding:
            self.discarding = False
            return
        line = bytes(self.partial)
        self.partial.clear()
        self.handle_line(line)

    # -- the session -------------------------------------------------------

    def notice(self, text):
        """A notice to this client; while naming, the prompt follows."""
        self.transport.write(text if self.username else text + PROMPT)

    def handle_line(self, line):
        try:
            text = line.decode("utf-8")  # strict: overlongs, surrogates...
        except UnicodeDecodeError:
            return self.notice(INVALID_UTF8)
        if self.username is None:  # the name rules cover control characters
            return self.register(line.strip(b" \t"))
        if CONTROL_IN_MESSAGE.search(text):
            return self.notice(CONTROL_CHARACTERS)
        command = line.strip(b" \t").upper()
        if command == b"NAMES":
            names = b"".join(b" %s\r\n" % name for name in self.room.users)
            self.transport.write(b"Users here:\r\n" + names)
        elif command == b"HELP":
            self.transport.write(HELP)
        elif command == b"QUIT":
            self.transport.write(BYE)
            self.leave("quit")
            self.transport.close()
        elif command:
            self.room.message_from(self.username, line)

    def register(self, name):
        if not valid_name(name):
            return self.notice(INVALID_NAME)
        if name in self.room.users:
            return self.notice(NOT_AVAILABLE % name)
        if self.login_timer:
            self.login_timer.cancel()
        self.username = name
        self.room.register(name, self)
        self.config.log(f"{self.peer} registered as {show(name)}")

    def send(self, data):
        """Queue data; False when it would exceed --max-backlog."""
        if self.closing:
            return True
        if self.transport.get_write_buffer_size() + len(data) \
                > self.config.max_backlog:
            return False
        self.transport.write(data)
        return True

    def drop_slow(self):
        self.leave("slow")
        self.transport.abort()

    def login_timed_out(self):
        if self.closing:
            return
        self.transport.write(TIMED_OUT)
        self.leave("timeout")
        self.transport.close()

    def leave(self, cause):
        """Stop handling input; a registered user departs, exactly once."""
        if self.closing:
            return
        self.closing = True
        if self.username is not None:
            self.config.log(f"{self.peer} ({show(self.username)}) departed: "
                            f"{cause}")
            self.room.deregister(self.username)
        else:
            self.config.log(f"{self.peer} left: {cause}")

    def say_goodbye(self):
        """Server shutdown: one last line, then close after it is sent."""
        self.closing = True
        self.transport.write(SHUTTING_DOWN)
        self.transport.close()


class Acceptor:
    """Accepting as the C servers do (loop.create_server, out of
    descriptors, logs a traceback at every try and tries again only a
    second later).

    A batch of connections at a time. Out of descriptors (or memory), the
    listening socket stays ready and accepting would spin: it pauses until a
    client's connection closes (a descriptor is free) or ACCEPT_RETRY has
    passed. The log says `accept paused` once per shortage, and `accept
    resumed` once the waiting clients have all been taken.
    """

    def __init__(self, room, sockets):
        self.room = room
        self.sockets = sockets
        self.loop = asyncio.get_running_loop()
        self.log = room.config.log
        self.short = False  # out of descriptors since "accept paused"
        self.retry = None  # the timer of a pause, while paused
        self.stopped = False
        self.listen(True)

    def listen(self, on):
        for sock in self.sockets:
            if on:
                self.loop.add_reader(sock, self.accept, sock)
            else:
                self.loop.remove_reader(sock)

    def accept(self, sock):
        for _ in range(ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except BlockingIOError:  # nobody waits: the shortage is over
                if self.short:
                    self.short = False
                    self.log("accept resumed")
                return
            except OSError as e:
                if e.errno in EXHAUSTION:
                    return self.pause(e)
                if e.errno not in TRANSIENT:
                    self.log(f"accept failed: {e.strerror}")
                continue
            conn.setblocking(False)
            protocol = functools.partial(Protocol, self.room,
                                         peer_name(address), self)
            self.loop.create_task(
                self.loop.connect_accepted_socket(protocol, conn))

    def pause(self, error):
        if not self.short:
            self.short = True
            self.log(f"accept paused: {error.strerror}")
        self.listen(False)
        self.retry = self.loop.call_later(ACCEPT_RETRY, self.resume)

    def resume(self):
        if self.retry and not self.stopped:
            self.retry.cancel()
            self.retry = None
            self.listen(True)

    def connection_closed(self):
        """A client's socket closes right after this: a paused accept
        resumes then, so a waiting client gets that descriptor at once."""
        if self.retry:
            self.loop.call_soon(self.resume)

    def stop(self):
        self.stopped = True
        if self.retry:
            self.retry.cancel()
        else:
            self.listen(False)
        for sock in self.sockets:
            sock.close()


# -- the command line and the listening sockets -------------------------------

USAGE = """\
Usage: {0} [NAME [PORT]] [options]
A telnet chat room (see docs/PROTOCOL.md).

  NAME, -n, --name NAME     room name              (default ChatServer)
  PORT, -p, --port PORT     TCP port, 0 = any free (default 1234)
  -H, --host ADDR           address to bind       (default: all, IPv4 and IPv6)
  --max-clients N           connections at once   (default 16384)
  --max-line BYTES          longest input line    (default 4096)
  --max-backlog BYTES       output queued for one client before it is dropped (default 1048576)
  --login-timeout SECONDS   time to pick a name   (default 60, 0 = none)
  -q, --quiet               no log on standard error
  -h, --help                usage, exit 0
  -V, --version             version, exit 0
"""
LONG_OPTIONS = ["name=", "port=", "host=", "max-clients=", "max-line=",
                "max-backlog=", "login-timeout=", "quiet", "help", "version"]
LONG_NAMES = {"-n": "--name", "-p": "--port", "-H": "--host", "-q": "--quiet",
              "-h": "--help", "-V": "--version"}
# The options that take a number: what the message calls it, its range.
NUMBERS = {"--port": ("port", 0, 65535, ""),
           "--max-clients": ("--max-clients", 1, 1 << 20, ""),
           "--max-line": ("--max-line", 1, 1 << 24, "of bytes "),
           "--max-backlog": ("--max-backlog", 1, 1 << 32, "of bytes "),
           "--login-timeout": ("--login-timeout", 0, 86400, "of seconds ")}


class BadArgument(Exception):
    """One line naming the bad option or value; exit status 2."""


def parse_arguments(argv, program):
    """The C servers' command line (common/options.c), their messages
    included: getopt's GNU mode, as getopt_long, takes options anywhere."""
    config = types.SimpleNamespace(
        name=b"ChatServer", port=1234, host=None, max_clients=16384,
        max_line=4096, max_backlog=1048576, login_timeout=60, quiet=False)
    try:
        options, positionals = getopt.gnu_getopt(argv, "n:p:H:qhV",
                                                 LONG_OPTIONS)
    except getopt.GetoptError as e:
        option = ("--" if e.msg.startswith("option --") else "-") + e.opt
        if e.msg.endswith("requires argument"):
            raise BadArgument(f"option '{option}' needs a value")
        raise BadArgument(f"unknown option '{option}'")
    for option, value in options:
        set_option(config, LONG_NAMES.get(option, option), value, program)
    if len(positionals) > 2:
        raise BadArgument(f"unexpected argument '{positionals[2]}'")
    for option, value in zip(("--name", "--port"), positionals):
        set_option(config, option, value, program)
    # A backlog that cannot hold two of the longest lines would drop every
    # reader of one legal line as slow.
    if config.max_backlog // 2 < config.max_line:
        raise BadArgument(
            f"--max-backlog {config.max_backlog} is below twice --max-line "
            f"{config.max_line}: a client must be able to hold two of the "
            f"longest lines")
    return config


def set_option(config, option, value, program):
    if option == "--help":
        print(USAGE.format(program), end="")
        sys.exit(0)
    elif option == "--version":
        print(f"{program} {VERSION}")
        sys.exit(0)
    elif option == "--quiet":
        config.quiet = True
    elif option == "--name":
        config.name = valid_room_name(value)
    elif option == "--host":
        if not value:
            raise BadArgument("invalid host '': give an address")
        config.host = value
    else:
        what, low, high, unit = NUMBERS[option]
        if not re.fullmatch("[0-9]+", value) or not low <= int(value) <= high:
            raise BadArgument(f"invalid {what} '{value}': use a number "
                              f"{unit}from {low} to {high}")
        setattr(config, option[2:].replace("-", "_"), int(value))


def valid_room_name(value):
    """1 to 256 bytes of UTF-8, no control characters (TAB included)."""
    name = os.fsencode(value)
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or not 1 <= len(name) <= 256 or \
            CONTROL_IN_NAME.search(text):
        raise BadArgument(f"invalid room name '{value}': use 1-256 bytes of "
                          f"UTF-8, no control characters")
    return name


def listening_sockets(host, port):
    """Bound, listening sockets: all addresses of host at one port.

    The default host is IPv6 and IPv4 (IPv4 alone without IPv6). With port 0
    the first socket picks the port and the others take the same one.
    """
    if host is None:
        addresses = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
        if not socket.has_ipv6:
            addresses = addresses[1:]
    else:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ValueError(f"cannot resolve host '{host}': {e.strerror}")
        addresses = list(dict.fromkeys((i[0], i[4][0]) for i in infos))
    for attempt in range(20):  # port 0: the port picked may be taken for v4
        sockets, chosen = [], port
        try:
            for family, address in addresses:
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as e:
                    if host is None and e.errno == errno.EAFNOSUPPORT:
                        continue  # no IPv6 on this machine
                    raise
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((address, chosen))
                except OSError as e:
                    if host is None and family == socket.AF_INET6 and \
                            e.errno == errno.EADDRNOTAVAIL:
                        sockets.pop().close()  # IPv6 disabled
                        continue
                    raise
                sock.listen(4096)
                sock.setblocking(False)
                chosen = sock.getsockname()[1]
            return sockets, chosen
        except OSError as e:
            for sock in sockets:
                sock.close()
            if port == 0 and e.errno == errno.EADDRINUSE and attempt < 19:
                continue
            raise


def describe(sockets):
    """What the start line of the log says is listening."""
    addresses = (sock.getsockname()[:2] for sock in sockets)
    return " and ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                        for host, port in addresses)


def log_asyncio_through(log):
    """asyncio reports its errors through `logging`, whose handler writes to
    standard error and would wait on a full pipe: they go to the log."""
    handler = logging.Handler()
    handler.emit = lambda record: log(
        f"asyncio: {record.getMessage()}"
        + (f": {record.exc_info[1]!r}" if record.exc_info else ""))
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    logger.propagate = False


async def serve(config, sockets, port):
    loop = asyncio.get_running_loop()
    room = ChatRoom(config)
    acceptor = Acceptor(room, sockets)
    stopping = loop.create_future()  # its result: the signal that came

    def stop(signum):
        if not stopping.done():
            stopping.set_result(signum)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop, signum)
    print(f"{show(config.name)} running on port {port}", flush=True)
    config.log(f"{show(config.name)} running on port {port}: chat-asyncio, "
               f"Python {platform.python_version()} (asyncio, "
               f"{selectors.DefaultSelector.__name__})")

    signum = await stopping
    count = len(room.connections)
    config.log(f"shutting down ({signal.strsignal(signum)}): telling {count} "
               f"connection{'' if count == 1 else 's'}")
    room.shutting_down = True
    acceptor.stop()
    for protocol in list(room.connections):
        protocol.say_goodbye()
    deadline = loop.time() + SHUTDOWN_GRACE
    while room.connections and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for protocol in list(room.connections):  # clients that stopped reading
        protocol.transport.abort()
    await asyncio.sleep(0)  # let connection_lost run
    config.log("stopped")


def main():
    program = os.path.basename(sys.argv[0])
    try:
        config = parse_arguments(sys.argv[1:], program)
    except BadArgument as e:
        sys.stderr.buffer.write(os.fsencode(
            f"{program}: {e}\nTry '{program} --help' for more information.\n"))
        return 2
    config.log = Log(config.quiet)
    log_asyncio_through(config.log)
    # Nobody's business but a debugger's: they must not end the server.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    except (ValueError, OSError):
        pass
    try:
        sockets, port = listening_sockets(config.host, config.port)
    except ValueError as e:
        sys.stderr.write(f"{program}: {e}\n")
        return 1
    except OSError as e:
        hint = (" (is another server running?)"
                if e.errno == errno.EADDRINUSE else "")
        sys.stderr.write(f"{program}: cannot listen on "
                         f"{config.host or 'all addresses'} port "
                         f"{config.port}: {e.strerror}{hint}\n")
        return 1
    files = "no limit" if soft == resource.RLIM_INFINITY else f"up to {soft}"
    config.log(f"listening on {describe(sockets)}; open files: {files}")
    asyncio.run(serve(config, sockets, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
