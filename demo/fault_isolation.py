#!/usr/bin/env python3
"""The fault-isolation demo: crash one worker of each server, see who dies.

    python3 demo/fault_isolation.py [--build-dir build] [--models forking,threaded]

For each model: start the server on a free port, let alice, bob and carol
join, then send SIGSEGV (what a crash in carol's code would raise) to the
one worker that serves carol:

- chat-forking: carol's child process (found through its socket: the child
  that holds the server end of carol's connection);
- chat-threaded: carol's thread (the newest thread: threads are started in
  the order clients arrive), with tgkill(2), so the signal goes to that one
  thread and no other.

Then it prints what each client saw, whether the server still runs, and
whether alice and bob can still talk. Expected: the forking room survives
and carol departs; the threaded server dies with everyone in it. Exit status
0 when that is what happened, 1 otherwise. Everything it starts, it stops.
"""

import argparse
import ctypes
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

DEMO_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(DEMO_DIR)
SYS_TGKILL = {"x86_64": 234, "aarch64": 131, "armv7l": 268, "i686": 270,
              "riscv64": 131, "ppc64le": 250, "s390x": 241}


def say(text=""):
    print(text, flush=True)


class Client:
    """One chat user over TCP, with everything it received."""

    def __init__(self, name, port):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.received = b""
        self.mark = 0  # what was received before the crash
        self.closed = False

    def pump(self, seconds):
        """Reads whatever arrives for `seconds` (or until closed)."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
            self.received += data

    def wait_for(self, text, seconds=10):
        deadline = time.monotonic() + seconds
        while text.encode() not in self.received[self.mark:]:
            if self.closed or time.monotonic() > deadline:
                return False
            self.pump(0.1)
        return True

    def send(self, line):
        try:
            self.sock.sendall(line.encode() + b"\r\n")
            return True
        except OSError:
            return False

    def local_port(self):
        return self.sock.getsockname()[1]

    def since_mark(self):
        return self.received[self.mark:].decode(errors="replace")

    def close(self):
        self.sock.close()


def socket_inode(server_port, client_port):
    """The inode of the server's end of a loopback connection."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    if local == server_port and remote == client_port:
                        return fields[9]
        except OSError:
            pass
    return None


def children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def process_holding(pids, inode):
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
        except OSError:
            continue
    return None


def count(n, one, many=None):
    """'1 thread', '2 threads', '0 children'."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def threads(pid):
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def tgkill(pid, tid, signum):
    number = SYS_TGKILL.get(os.uname().machine)
    if number is None:
        raise OSError("tgkill: unknown system call number here")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def no_core_dumps():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start_server(binary, log_path):
    log = open(log_path, "w")
    server = subprocess.Popen(
        [binary, "Lab", "0", "-H", "127.0.0.1", "--login-timeout", "0"],
        stdout=subprocess.PIPE, stderr=log, preexec_fn=no_core_dumps)
    log.close()
    ready, _, _ = select.select([server.stdout], [], [], 10)
    line = server.stdout.readline().decode() if ready else ""
    if "running on port" not in line:
        server.kill()
        server.wait()
        raise RuntimeError(f"{binary} did not start: {line!r}")
    return server, int(line.split()[-1])


def stop_server(server):
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()  # our own child, by its pid
            server.wait()
    server.stdout.close()


def describe_exit(server):
    code = server.poll()
    if code is None:
        return None
    if code < 0:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def demo(model, binary, log_dir):
    say(f"== chat-{model} " + "=" * (60 - len(model)))
    server, port = start_server(binary, os.path.join(log_dir,
                                                     f"{model}.log"))
    clients = []
    try:
        for name in ("alice", "bob", "carol"):
            c = Client(name, port)
            clients.append(c)
            if not c.wait_for("Enter user name: "):
                raise RuntimeError(f"{name}: no prompt")
            c.send(name)
            if not c.wait_for(f"User {name} arrived."):
                raise RuntimeError(f"{name}: not registered")
        alice, bob, carol = clients
        for c in clients:
            c.wait_for("User carol arrived.")
            c.pump(0.2)
            c.mark = len(c.received)
        say(f"  alice, bob and carol are in the room (server pid "
            f"{server.pid}, port {port})")

        if model == "forking":
            inode = socket_inode(port, carol.local_port())
            victim = process_holding(children(server.pid), inode)
            if not victim:
                raise RuntimeError("cannot find carol's child process")
            say(f"  server: 1 parent + "
                f"{count(len(children(server.pid)), 'child', 'children')};"
                f" carol's child is pid {victim} (it holds socket inode "
                f"{inode})")
            say(f"  $ kill -SEGV {victim}      # carol's process crashes")
            os.kill(victim, signal.SIGSEGV)
        else:
            tids = [t for t in threads(server.pid) if t != server.pid]
            if not tids:
                raise RuntimeError("no client thread found")
            victim = tids[-1]
            say(f"  server: 1 process, {len(tids) + 1} threads; carol's "
                f"thread is tid {victim} (the newest)")
            say(f"  $ tgkill({server.pid}, {victim}, SIGSEGV)   # carol's "
                "thread crashes")
            tgkill(server.pid, victim, signal.SIGSEGV)

        for c in clients:
            c.pump(1.0)
        time.sleep(0.3)
        for c in clients:
            c.pump(0.3)
        gone = describe_exit(server)
        say("  what each one saw afterwards:")
        for c in clients:
            lines = [l for l in c.since_mark().replace("\r", "").split("\n")
                     if l]
            shown = "; ".join(lines[:3]) if lines else "(nothing)"
            state = "connection closed" if c.closed else "still connected"
            say(f"    {c.name:6} {state:18} {shown}")
        departed = all("User carol departed." in c.since_mark()
                       for c in (alice, bob))
        talk_ok = False
        if not alice.closed and not bob.closed:
            bob.mark = len(bob.received)
            alice.send("still here?")
            talk_ok = bob.wait_for("alice: still here?", 5)
        if gone:
            say(f"  server: {gone}")
        else:
            say(f"  server: alive, "
                f"{count(len(children(server.pid)), 'child', 'children')}, "
                f"{count(len(threads(server.pid)), 'thread')}")
        say(f"  alice says 'still here?': "
            f"{'bob hears it' if talk_ok else 'nobody hears it'}")
        if model == "forking":
            ok = not gone and talk_ok and departed and carol.closed
            verdict = ("one process died, one user left; the room lives on"
                       if ok else "NOT what was expected")
        else:
            ok = gone is not None and alice.closed and bob.closed
            verdict = ("one thread crashed and took the whole process, "
                       "every user with it" if ok else
                       "NOT what was expected")
        say(f"  => {verdict}")
        say()
        return ok
    finally:
        for c in clients:
            c.close()
        stop_server(server)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default=os.path.join(REPO_DIR,
                                                            "build"))
    parser.add_argument("--models", default="forking,threaded")
    parser.add_argument("--logs", default=None,
                        help="folder for the servers' logs (default: a "
                             "temporary one)")
    args = parser.parse_args()
    log_dir = args.logs or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"fault-isolation-{os.getpid()}")
    os.makedirs(log_dir, exist_ok=True)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    all_ok = True
    for model in args.models.split(","):
        binary = os.path.join(args.build_dir, "bin", f"chat-{model}")
        if not os.access(binary, os.X_OK):
            say(f"== chat-{model}: {binary} is not built; skipped")
            all_ok = False
            continue
        try:
            all_ok &= demo(model, binary, log_dir)
        except (RuntimeError, OSError) as e:
            say(f"  error: {e}")
            all_ok = False
    say(f"Server logs: {log_dir}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
