#!/usr/bin/env python3
"""A burst through a room with a small --max-backlog: readers are kept, a
client that does not read is dropped (docs/PROTOCOL.md section 4).

Usage:
    python3 burst.py SERVER [--lines N] [--batch N] [--runs N]

The server runs with `--max-backlog 65536`. Four users register: two
readers, whose threads read their sockets as fast as they can; `mute`, which
never reads (a 4 KiB receive buffer); and `sender`, which sends 64 lines of
1 KB at a time and waits for its own last line to come back before it sends
the next 64, until it has sent 20,000 (20 MB through the room).

The contract allows dropping only a client that does not read, whatever the
server's own scheduling does: a server that judges a client by how far the
room has run ahead of the process or thread serving it, rather than by what
the client has not taken when the server could write to it, drops readers
here (issue 10: chat-forking did, in most runs on a busy machine).

Checked: each reader and the sender receive every one of the sender's lines,
in order, nothing else but the arrivals and one `User mute departed.`, and
are never closed: `the end`, sent last, reaches all three, then
`Server shutting down` after SIGTERM. `mute` is dropped: the server closes
its connection, everyone hears it depart once, and the log names its port
with the cause `slow`. The server's teardown is the conformance suite's
(exit 0 within 2 s, nothing left behind, no sanitizer report).

Environment: CONFORMANCE_TIME_FACTOR (default 1) stretches every deadline.
Standard library only; the conformance suite's Server and Client.
"""

import argparse
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "conformance"))
import conformance  # noqa: E402
from conformance import SHUTTING_DOWN, Client, Server, seconds  # noqa: E402

MAX_BACKLOG = 65536
PAYLOAD = b"x" * 1000


def fail(message):
    raise AssertionError(message)


class Reader(threading.Thread):
    """Reads one client's socket as fast as it can until the server closes
    it or the test ends; keeps every byte."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.received = bytearray(client.buffer)  # what came with the welcome
        client.buffer.clear()
        self.closed_at = None  # monotonic time of the end of the stream
        self.done = threading.Event()

    def run(self):
        sock = self.client.sock
        sock.settimeout(0.2)
        while not self.done.is_set():
            try:
                chunk = sock.recv(1 << 18)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_at = time.monotonic()
                return
            self.received += chunk

    def lines(self):
        return bytes(self.received).split(b"\r\n")


def register(server, name, everyone, rcvbuf=None):
    client = Client(server.port, name, rcvbuf=rcvbuf)
    server.clients.append(client)
    client.expect(b"Welcome to ChatServer\r\nEnter user name: ")
    client.send(name.encode() + b"\n")
    arrival = b"User %s arrived.\r\n" % name.encode()
    for member in everyone + [client]:
        member.expect(arrival)
    return client


def message(number):
    return b"%d %s" % (number, PAYLOAD)


def run_once(server, lines, batch):
    first = register(server, "reader1", [])
    second = register(server, "reader2", [first])
    mute = register(server, "mute", [first, second], rcvbuf=4096)
    sender = register(server, "sender", [first, second])
    readers = [Reader(first), Reader(second)]
    for reader in readers:
        reader.start()

    started = time.monotonic()
    deadline = started + seconds(120)
    echoed = []  # what the sender read, line by line
    try:
        for start in range(0, lines, batch):
            numbers = range(start, min(start + batch, lines))
            sender.send(b"".join(message(n) + b"\n" for n in numbers))
            last = b"sender: " + message(numbers[-1])
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"only {start} of {lines} lines echoed within "
                     f"{seconds(120):.0f} s")
            echoed += sender.read_lines_until(last, timeout=left / seconds(1))
            for reader in readers:
                if reader.closed_at is not None:
                    fail(f"{reader.client.label} was closed by the server "
                         f"after {start + len(numbers)} lines were sent")
        sender.send(b"the end\n")
        echoed += sender.read_lines_until(b"sender: the end")
        for reader in readers:
            wait_for(reader, b"sender: the end\r\n", deadline)
        sent_for = time.monotonic() - started
    finally:
        for reader in readers:
            reader.done.set()
        for reader in readers:
            reader.join()

    expected = [b"sender: " + message(n) for n in range(lines)]
    expected.append(b"sender: the end")
    departed = b"User mute departed."
    for label, got in [("sender", echoed)] + [
            (r.client.label, r.lines()) for r in readers]:
        if label != "sender":
            got = got[:-1] if got and got[-1] == b"" else got
            if got[-1] != b"sender: the end":
                fail(f"{label}: the stream does not end with the last line")
        said = [line for line in got if line.startswith(b"sender: ")]
        if said != expected:
            at = next((i for i, (a, b) in enumerate(zip(said, expected))
                       if a != b), min(len(said), len(expected)))
            fail(f"{label}: {len(said)} of the sender's {len(expected)} "
                 f"lines, first difference at line {at}: "
                 f"{said[at][:40] if at < len(said) else None!r} instead of "
                 f"{expected[at][:40] if at < len(expected) else None!r}")
        others = [line for line in got if not line.startswith(b"sender: ")
                  and not re.fullmatch(rb"User \w+ arrived\.", line)]
        if others != [departed]:
            fail(f"{label}: besides the sender's lines and the arrivals, "
                 f"{others[:5]!r} (expected exactly one {departed!r})")

    # The mute client is gone: what the server had queued, then the end.
    mute.drain_until_closed(timeout=30)
    return first, second, sender, sent_for


def wait_for(reader, line, deadline):
    """Until `line` is among what the reader received, or the deadline."""
    while line not in reader.received[-(len(line) + 4096):]:
        if reader.closed_at is not None:
            fail(f"{reader.client.label} was closed before {line!r}")
        if time.monotonic() > deadline:
            fail(f"{reader.client.label}: {line!r} did not arrive")
        time.sleep(0.005)  # the reader thread fills it; polled, with a deadline


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1,
                        help="run it this many times, each on a new server")
    args = parser.parse_args()
    conformance.SERVER = os.path.abspath(args.server)
    for run in range(args.runs):
        server = Server(["-p", "0", "-H", "127.0.0.1",
                         "--max-backlog", str(MAX_BACKLOG)])
        try:
            server.wait_started()
            first, second, sender, took = run_once(server, args.lines,
                                                   args.batch)
            server.stop()
            for client in (first, second, sender):
                client.expect(SHUTTING_DOWN)
                client.expect_eof()
            log = server.stderr_text()
            mute_port = server.clients[2].local_port
            if not re.search(rf"(?<![0-9]){mute_port}(?![0-9]).*slow", log):
                fail(f"no log line with mute's port {mute_port} and 'slow'")
        finally:
            problems = server.finish()
        if problems:
            fail("server teardown: " + "\n".join(problems))
        print(f"burst: run {run + 1}: {args.lines} lines of "
              f"{len(message(0))} bytes in bursts of {args.batch} in "
              f"{took:.1f} s; both readers kept every line, the mute client "
              f"was dropped as slow; ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print(f"burst: FAILED: {error}", file=sys.stderr)
        sys.exit(1)
