#!/usr/bin/env python3
"""The talk's asyncio ChatServer, grown into a full implementation of SPEC.md.

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
- --max-clients, --login-timeout, logging, SIGINT/SIGTERM shutdown.

Same command line, output and exit codes as the C servers (chat-evented,
chat-threaded, chat-forking). Python 3.11, standard library only.
"""

import argparse
import asyncio
import datetime
import errno
import os
import re
import resource
import signal
import socket
import sys

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
CONTROL_IN_MESSAGE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # TAB allowed
CONTROL_IN_NAME = re.compile(rb"[\x00-\x1f\x7f]")
SHUTDOWN_GRACE = 1.0  # seconds to flush goodbyes before closing by force


def log(config, text):
    """One log line on stderr: ISO 8601 UTC time, then the text."""
    if config.quiet:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    sys.stderr.write(f"{now:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f"Z {text}\n")
    sys.stderr.flush()


def valid_name(name):
    """1 to 32 characters (code points), no space, colon or control byte."""
    return (1 <= len(name.decode("utf-8")) <= 32 and b" " not in name
            and b":" not in name and not CONTROL_IN_NAME.search(name))


def peer_name(transport):
    host, port = transport.get_extra_info("peername")[:2]
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

    def __init__(self, room):
        self.room = room
        self.config = room.config
        self.transport = None
        self.peer = "?"
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
        self.peer = peer_name(transport)
        if len(self.room.connections) >= self.config.max_clients:
            log(self.config, f"{self.peer} refused: server full")
            self.closing = True
            transport.write(SERVER_FULL)
            transport.close()
            return
        self.room.connections.add(self)
        log(self.config, f"{self.peer} accepted")
        transport.write(b"Welcome to %s\r\n" % self.config.name + PROMPT)
        if self.config.login_timeout > 0:
            self.login_timer = asyncio.get_running_loop().call_later(
                self.config.login_timeout, self.login_timed_out)

    def connection_lost(self, exc):
        if self not in self.room.connections:
            return  # a refused connection
        self.room.connections.discard(self)
        if self.login_timer:
            self.login_timer.cancel()
        self.leave("closed" if exc is None else f"closed ({exc})")

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
            line.decode("utf-8")  # strict: overlongs, surrogates... rejected
        except UnicodeDecodeError:
            return self.notice(INVALID_UTF8)
        if self.username is None:  # the name rules cover control characters
            return self.register(line.strip(b" \t"))
        if CONTROL_IN_MESSAGE.search(line):
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
        log(self.config, f"{self.peer} registered as {show(name)}")

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
            log(self.config, f"{self.peer} {show(self.username)} departed: "
                f"{cause}")
            self.room.deregister(self.username)
        else:
            log(self.config, f"{self.peer} left unregistered: {cause}")

    def say_goodbye(self):
        """Server shutdown: one last line, then close after it is sent."""
        self.closing = True
        self.transport.write(SHUTTING_DOWN)
        self.transport.close()


# -- the command line and the listening sockets -------------------------------

def integer(low, high=None):
    def parse(text):
        if not re.fullmatch(r"[0-9]+", text):
            raise argparse.ArgumentTypeError(f"not a number: '{text}'")
        value = int(text)
        if value < low or (high is not None and value > high):
            limit = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"'{text}' out of range {limit}")
        return value
    return parse


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        """Bad arguments: one line naming the problem, a hint, exit 2."""
        self.exit(2, f"{self.prog}: {message}\n"
                     f"Try '{self.prog} --help' for more information.\n")


def parse_arguments(argv):
    parser = ArgumentParser(
        prog=os.path.basename(sys.argv[0]),
        description="A telnet chat room (asyncio peer of the C servers).")
    parser.add_argument("pos_name", nargs="?", metavar="NAME",
                        help="room name (default ChatServer)")
    parser.add_argument("pos_port", nargs="?", metavar="PORT",
                        type=integer(0, 65535),
                        help="TCP port, 0 = any free (default 1234)")
    parser.add_argument("-n", "--name", help="room name")
    parser.add_argument("-p", "--port", type=integer(0, 65535),
                        help="TCP port")
    parser.add_argument("-H", "--host", metavar="ADDR",
                        help="address to bind (default: all, IPv4 and IPv6)")
    parser.add_argument("--max-clients", type=integer(1), default=16384,
                        metavar="N", help="connections at once (16384)")
    parser.add_argument("--max-line", type=integer(1), default=4096,
                        metavar="BYTES", help="longest input line (4096)")
    parser.add_argument("--max-backlog", type=integer(1), default=1048576,
                        metavar="BYTES",
                        help="output queued for one client before it is "
                             "dropped (1048576)")
    parser.add_argument("--login-timeout", type=integer(0), default=60,
                        metavar="SECONDS",
                        help="time to pick a name (60, 0 = none)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no log on standard error")
    parser.add_argument("-V", "--version", action="version",
                        version=f"%(prog)s {VERSION}")
    config = parser.parse_intermixed_args(argv)

    name = config.name if config.name is not None else config.pos_name
    name = os.fsencode(name if name is not None else "ChatServer")
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        parser.error("invalid room name: not valid UTF-8")
    if not 1 <= len(name) <= 256 or CONTROL_IN_NAME.search(name):
        parser.error(f"invalid room name '{os.fsdecode(name)}': use 1-256 "
                     "bytes, no control characters")
    config.name = name
    port = config.port if config.port is not None else config.pos_port
    config.port = 1234 if port is None else port
    return config


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
            raise ValueError(f"bad host '{host}': {e.strerror}")
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


async def serve(config, sockets, port):
    loop = asyncio.get_running_loop()
    room = ChatRoom(config)
    servers = [await loop.create_server(lambda: Protocol(room), sock=sock,
                                        backlog=4096) for sock in sockets]
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log(config, f"{show(config.name)} listening on port {port}")
    print(f"{show(config.name)} running on port {port}", flush=True)

    await stop.wait()
    log(config, "shutting down")
    room.shutting_down = True
    for server in servers:
        server.close()
    for protocol in list(room.connections):
        protocol.say_goodbye()
    deadline = loop.time() + SHUTDOWN_GRACE
    while room.connections and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for protocol in list(room.connections):  # clients that stopped reading
        protocol.transport.abort()
    await asyncio.sleep(0)  # let connection_lost run
    log(config, "stopped")


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = parse_arguments(sys.argv[1:])
    try:
        sockets, port = listening_sockets(config.host, config.port)
    except ValueError as e:
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: {e}\n")
        return 2
    except OSError as e:
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: cannot listen on "
                         f"port {config.port}: {e.strerror}\n")
        return 1
    asyncio.run(serve(config, sockets, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
