#!/usr/bin/env python3
"""Unit tests of the report's judgements (CTest: bench.report, label bench).

The main input is the reference run of 2026-11-26, kept read-only in
bench/testdata/ after the reference was retaken: at N = 10,000 its
chat-forking throughput window saw no message sent (3,195 deliveries of
older messages in 7.3 s, then a 41 s drain), and an earlier report turned
that into "1.29 ms per delivery, 436 deliveries/s". These tests fail if
such a window is ever given a rate again, and check the chart rules of
issue 15 (no exponents or SI prefixes on times, coinciding lines noted,
missing points explained).

    python3 bench/test_report.py
"""

import csv
import json
import os
import shutil
import sys
import tempfile
import unittest

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import report  # noqa: E402

REFERENCE = os.path.join(BENCH, "testdata", "runs-2026-11-26.json")


def load_reference():
    with open(REFERENCE) as f:
        return json.load(f)


def find_run(results, model, clients):
    runs = [r for r in results["runs"]
            if r["model"] == model and r["clients"] == clients]
    assert runs, f"the reference run has no {model} at N = {clients}"
    return runs


def window(messages, deliveries, seconds, drain, **extra):
    return dict({"seconds": seconds, "messages": messages,
                 "deliveries": deliveries, "drain_s": drain}, **extra)


class WindowVerdict(unittest.TestCase):
    def test_enough_messages_and_short_drain_is_a_measurement(self):
        self.assertIsNone(report.window_verdict(window(20, 2000, 5.0, 0.1)))
        self.assertIsNone(report.window_verdict(window(960488, 9604900,
                                                       5.0, 0.0)))

    def test_fewer_messages_than_the_threshold_is_stalled(self):
        verdict = report.window_verdict(window(19, 190000, 5.0, 0.1))
        self.assertIsNotNone(verdict)
        self.assertTrue(verdict.startswith("stalled"))
        self.assertIn("19 message(s) sent", verdict)

    def test_threshold_is_a_parameter(self):
        self.assertIsNone(report.window_verdict(window(5, 500, 5.0, 0.1),
                                                min_fanouts=5))
        self.assertIsNotNone(report.window_verdict(window(5, 500, 5.0, 0.1),
                                                   min_fanouts=6))

    def test_drain_longer_than_the_window_is_stalled(self):
        verdict = report.window_verdict(window(43, 432612, 5.006, 8.224))
        self.assertIsNotNone(verdict)
        self.assertIn("drain (8.22 s) took longer than the window", verdict)
        self.assertIsNone(report.window_verdict(window(43, 432612, 5.0,
                                                       5.0)))

    def test_what_was_seen_is_reported(self):
        verdict = report.window_verdict(window(0, 3195, 7.330052, 41.226,
                                               extended=True))
        for seen in ("0 messages sent", "3,195 deliveries", "7.33 s window",
                     "41.2 s drain", "extended"):
            self.assertIn(seen, verdict)

    def test_open_loop_behind_its_schedule(self):
        self.assertIsNotNone(report.open_loop_verdict(
            window(9, 2414, 4.516, 34.9)))
        self.assertIsNone(report.open_loop_verdict(
            window(10, 100000, 5.0, 0.164)))


class ReferenceRun(unittest.TestCase):
    """The reference run of 2026-11-26, judged again."""

    def setUp(self):
        self.results = load_reference()
        report.derive_all(self.results)

    def test_forking_at_10000_is_stalled_and_has_no_rate(self):
        (run,) = find_run(self.results, "forking", 10000)
        self.assertEqual(run["load"]["throughput"]["messages"], 0)
        figures = run["figures"]
        self.assertIn("throughput_stalled", figures)
        self.assertIn("0 messages sent", figures["throughput_stalled"])
        for rate in ("deliveries_per_s", "cpu_us_per_delivery",
                     "switches_per_delivery", "syscalls_per_delivery"):
            self.assertNotIn(rate, figures)

    def test_evented_at_10000_keeps_its_rate(self):
        for run in find_run(self.results, "evented", 10000):
            self.assertNotIn("throughput_stalled", run["figures"])
            self.assertGreater(run["figures"]["deliveries_per_s"], 1e6)

    def test_summary_gives_no_rate_where_every_run_stalled(self):
        summary = report.median_figures(self.results["runs"])
        s = summary[("forking", 10000)]
        self.assertEqual(s["throughput_stalled_runs"], s["passed"])
        self.assertNotIn("deliveries_per_s", s)
        self.assertNotIn("cpu_us_per_delivery", s)

    def test_report_shows_stalled_not_the_old_figures(self):
        folder = tempfile.mkdtemp(prefix="bench-report-test-")
        try:
            shutil.copy(REFERENCE, os.path.join(folder, "runs.json"))
            with open(report.build(folder)) as f:
                text = f.read()
            process = [line for line in text.splitlines()
                       if line.startswith("| **Process** |")]
            self.assertEqual(len(process), 1, "one Process row in the table")
            self.assertIn("**stalled**", process[0])
            self.assertNotIn("1.29 ms", process[0])
            self.assertNotIn("| 436 |", process[0])
            self.assertIn("0 messages sent and 3,195 deliveries", text)
            with open(os.path.join(folder, "runs.csv"), newline="") as f:
                rows = [r for r in csv.DictReader(f)
                        if r["model"] == "forking" and r["clients"] == "10000"]
            self.assertEqual(rows[0]["deliveries_per_s"], "")
            self.assertEqual(rows[0]["cpu_us_per_delivery"], "")
            self.assertTrue(rows[0]["throughput_stalled"].startswith(
                "stalled"))
            with open(os.path.join(folder, "charts", "deliveries.dat")) as f:
                lines = [line.split() for line in f if not line.startswith("#")]
            columns = [m["name"] for m in self.results["models"]]
            at_10000 = [line for line in lines if line[0] == "10000"][0]
            self.assertEqual(at_10000[1 + columns.index("forking")], "NaN")
            self.assertIn("forking at N = 10,000: stalled", text)
        finally:
            shutil.rmtree(folder)


class Charts(unittest.TestCase):
    def test_tics_are_plain_numbers(self):
        for values, si in (([0.002, 636.0], False), ([1.1, 40600.0], False),
                           ([0.0000151, 0.64], False), ([436.0, 5.8e6], True),
                           ([1.0, 10001.0], True)):
            low, high, tics = report.y_axis(values, si)
            self.assertLess(low, min(values))
            self.assertGreater(high, max(values))
            labels = [part.split("'")[1] for part in tics.split(", ")]
            self.assertGreaterEqual(len(labels), 2, tics)
            for label in labels:
                self.assertNotIn("e+", label)
                self.assertNotIn("e-", label)
                if not si:  # no 'm' for milli, no 'k': plain digits
                    self.assertRegex(label, r"^[0-9.,]+$")

    def test_times_are_drawn_in_ms_and_s(self):
        charts = {c[0]: c for c in report.CHARTS}
        self.assertEqual(charts["latency-p99"][4], 1e-3)  # µs -> ms
        self.assertIn("milliseconds", charts["latency-p99"][3])
        self.assertEqual(charts["connect"][3], "seconds")
        for name in ("latency-p99", "connect", "cpu-per-delivery"):
            self.assertNotEqual(charts[name][5], report.SI)

    def test_coinciding_lines_are_found(self):
        summary = {}
        for n in (10, 100, 1000):
            summary[("evented", n)] = {"tasks": 1}
            summary[("asyncio", n)] = {"tasks": 1}
            summary[("threaded", n)] = {"tasks": n + 1}
        pairs = report.coinciding(["evented", "threaded", "asyncio"],
                                  [10, 100, 1000], "tasks", summary, 1)
        self.assertEqual(pairs, [("evented", "asyncio")])

    def test_missing_points_are_explained(self):
        summary = {("asyncio", 10): {"runs": 1, "passed": 1,
                                     "user_bytes_per_conn": -4096.0},
                   ("forking", 10000): {"runs": 1, "passed": 1,
                                        "throughput_stalled_runs": 1}}
        self.assertIn("not above zero", report.why_missing(
            "asyncio", 10, "user_bytes_per_conn", summary))
        self.assertIn("stalled", report.why_missing(
            "forking", 10000, "deliveries_per_s", summary))
        self.assertEqual(report.why_missing(
            "coroutine", 10, "tasks", summary), "not run")

    def test_every_model_has_its_own_style(self):
        models = ["evented", "coroutine", "threaded", "forking", "asyncio",
                  "newmodel"]
        styles = report.model_styles(models)
        self.assertEqual(len({styles[m] for m in models}), len(models))
        self.assertEqual(len({styles[m][1] for m in models}), len(models))


if __name__ == "__main__":
    unittest.main()
