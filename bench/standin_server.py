# TEMPORARY stand-in chat server for developing chat-load; delete before handing over.
import asyncio, sys
class Room:
    def __init__(s): s.users = {}
room = Room()
class P(asyncio.Protocol):
    def connection_made(s, t):
        s.t = t; s.name = None; s.buf = b""
        t.write(b"Welcome to ChatServer\r\nEnter user name: ")
    def data_received(s, d):
        s.buf += d
        while b"\n" in s.buf:
            line, s.buf = s.buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if s.name is None:
                n = line.strip()
                if n in room.users:
                    s.t.write(b"Username " + n + b" not available\r\nEnter user name: "); continue
                s.name = n; room.users[n] = s.t
                bc(b"User " + n + b" arrived.\r\n")
            elif line.strip():
                bc(s.name + b": " + line + b"\r\n")
    def connection_lost(s, e):
        s.t = None
        if s.name is not None:
            del room.users[s.name]; bc(b"User " + s.name + b" departed.\r\n")
def bc(m):
    for t in room.users.values():
        if not t.is_closing(): t.write(m)
async def main():
    import signal
    import argparse; a = argparse.ArgumentParser(); a.add_argument("-q", action="store_true"); a.add_argument("-H"); a.add_argument("-p", type=int, default=0); a.add_argument("--max-clients"); a.add_argument("--max-backlog"); a.add_argument("--login-timeout"); o = a.parse_args()
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", o.p, backlog=4096)
    print("ChatServer running on port %d" % srv.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT): asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for t in list(room.users.values()): t.write(b"Server shutting down\r\n"); t.close()
    await asyncio.sleep(0.2)
asyncio.run(main())
