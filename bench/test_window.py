#!/usr/bin/env python3
"""chat-load's throughput window goes on when it holds too little
(CTest: bench.window, label bench).

Against a real chat-evented on loopback: a window asked to hold more
messages than it can (--min-fanouts 1000000) goes on to --max-duration and
says it was extended, and the report calls it stalled; a window that holds
enough keeps its duration. Every step has a deadline.

    python3 bench/test_window.py BUILD/bin
"""

import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

BIN = None


class Server:
    def __init__(self):
        self.process = subprocess.Popen(
            [os.path.join(BIN, "chat-evented"), "-q", "-H", "127.0.0.1",
             "-p", "0", "--login-timeout", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 15
        line = ""
        while not line and time.monotonic() < deadline:
            line = self.process.stdout.readline()
        words = line.split()
        if len(words) < 4 or words[-3:-1] != ["on", "port"]:
            self.stop()
            raise RuntimeError(f"no startup line from chat-evented: {line!r}")
        self.port = int(words[-1])

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def throughput(port, *options):
    done = subprocess.run(
        [os.path.join(BIN, "chat-load"), "-q", "-H", "127.0.0.1",
         "-p", str(port), "-n", "20", "-w", "throughput", "-d", "0.3",
         "--warmup", "0.1", "--drain-timeout", "10", *options],
        capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout)
    assert result["ok"], result.get("errors")
    return result["throughput"]


class WindowExtension(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_window_that_holds_enough_keeps_its_duration(self):
        window = throughput(self.server.port)
        self.assertFalse(window["extended"])
        self.assertGreaterEqual(window["messages"], 20)
        self.assertLess(window["seconds"], 0.3 + 0.5)
        self.assertIsNone(report.window_verdict(window))

    def test_a_window_that_cannot_goes_on_to_the_limit_then_is_stalled(self):
        window = throughput(self.server.port, "--min-fanouts", "1000000",
                            "--max-duration", "1.2")
        self.assertTrue(window["extended"])
        self.assertGreaterEqual(window["seconds"], 1.1)
        self.assertLess(window["seconds"], 1.2 + 1.5)
        self.assertEqual(window["max_duration_s"], 1.2)
        self.assertGreaterEqual(window["in_flight_s"], 0)
        verdict = report.window_verdict(window, min_fanouts=1000000)
        self.assertIsNotNone(verdict)
        self.assertIn("extended as far as allowed", verdict)

    def test_a_fixed_window_when_asked(self):
        window = throughput(self.server.port, "--min-fanouts", "0")
        self.assertFalse(window["extended"])
        self.assertLess(window["seconds"], 0.3 + 0.5)


if __name__ == "__main__":
    if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: test_window.py BUILD/bin")
    BIN = sys.argv.pop(1)
    unittest.main()
