#!/usr/bin/env python3
"""chat-threaded: a newcomer the server cannot give a thread gets `Server
full, try again later` (docs/PROTOCOL.md section 4), not a silent close.

Usage: python3 server_full.py build/bin/chat-threaded

A thread needs a stack, which chat-threaded maps itself: with its address
space limited (RLIMIT_AS, set on the running server with prlimit) to a
little more than it uses, the next stacks cannot be mapped. The newcomers
that come then must get the notice and be closed, the room must go on, and
once the limit is lifted newcomers are served again. Not for sanitizer
builds, whose runtimes reserve terabytes of address space.

The server is started, watched and stopped by the conformance suite's
fixture (exit 0 within 2 s of SIGTERM, nothing left behind).
"""

import os
import resource
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "conformance"))
import conformance  # noqa: E402
from conformance import SERVER_FULL, ChatTest  # noqa: E402


def address_space(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


class ServerFull(ChatTest):

    def test_no_stack_for_a_thread(self):
        server = self.start("--max-clients", "1000")
        ada = self.arrive(server, "ada")
        hard = resource.prlimit(server.pid, resource.RLIMIT_AS)[1]
        # Room for a few 80 KiB stacks, not for a hundred.
        resource.prlimit(server.pid, resource.RLIMIT_AS,
                         (address_space(server.pid) + (1 << 20), hard))
        try:
            answers = []
            for number in range(100):
                client = self.connect(server, f"c{number}")
                answers.append(client.expect_one_of(
                    [self.welcome(server), SERVER_FULL]))
                if answers[-1] == SERVER_FULL:
                    client.expect_eof()
                    break
            self.assertEqual(answers[-1], SERVER_FULL,
                             f"{len(answers)} newcomers welcomed, none told "
                             f"the server is full")
            ada.send(b"still here\n")
            ada.expect_lines("ada: still here")
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_AS, (hard, hard))
        self.arrive(server, "bob", [ada])
        self.assertRegex(server.stderr_text(), r"refused: out of memory")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    conformance.SERVER = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
