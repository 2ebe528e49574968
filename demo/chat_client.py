#!/usr/bin/env python3
"""A small line client for the chat room, for machines without telnet or nc.

    python3 demo/chat_client.py [HOST] PORT

What you type is sent line by line (LF ends a line, as nc sends it); what
the server sends is shown as it arrives, the prompt `Enter user name: `
included, with CR LF turned into line ends. When the server closes the
connection it says `Connection closed by foreign host.` like telnet and
exits; at the end of your input (Ctrl-D) it stops sending, shows what is
still coming, and exits when the server closes. Standard library only.
"""

import argparse
import os
import selectors
import socket
import sys


def main():
    parser = argparse.ArgumentParser(
        description="Connect to a chat server: type lines, see the room "
                    "(a stand-in for telnet or nc).")
    parser.add_argument("host", nargs="?", default="127.0.0.1",
                        help="server host name or address (default "
                             "127.0.0.1)")
    parser.add_argument("port", type=int, help="server port")
    args = parser.parse_args()
    try:
        sock = socket.create_connection((args.host, args.port), timeout=10)
    except OSError as error:
        print(f"chat_client: cannot connect to {args.host} port "
              f"{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    sock.settimeout(None)
    print(f"Connected to {args.host} port {args.port} (demo/chat_client.py; "
          "Ctrl-D or QUIT leaves).", flush=True)
    out = sys.stdout.buffer
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "server")
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") \
        else sys.stdin.buffer
    selector.register(stdin, selectors.EVENT_READ, "keyboard")
    typing = True
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "server":
                    try:
                        data = sock.recv(65536)
                    except ConnectionError:
                        data = b""
                    if not data:
                        out.write(b"Connection closed by foreign host.\n")
                        out.flush()
                        return 0
                    out.write(data.replace(b"\r\n", b"\n"))
                    out.flush()
                elif typing:
                    data = os.read(stdin.fileno(), 65536)
                    if data:
                        sock.sendall(data)
                    else:  # Ctrl-D: no more to send, keep listening
                        typing = False
                        selector.unregister(stdin)
                        sock.shutdown(socket.SHUT_WR)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
