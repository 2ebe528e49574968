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

A second fixture, a quick sweep with a cluster (runs-cluster-2026-12-03.json:
one chat-evented and two sharing a room through Redis, at N = 1,000), checks
the cluster's figures: Redis's CPU added to the servers', the commands to
Redis per room line, where the cores' time went, a stalled cluster window
given no rate, and issue 14's goals with their verdicts.

    python3 bench/test_report.py
"""

import copy
import csv
import json
import os
import shutil
import sys
import tempfile
import unittest

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import cluster  # noqa: E402
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

    def test_a_cluster_wears_its_models_colour(self):
        models = ["evented", "evented-x2", "evented-x4", "threaded",
                  "threaded-x2", "newmodel"]
        styles = report.model_styles(models)
        self.assertEqual(len({styles[m] for m in models}), len(models))
        self.assertEqual(styles["evented-x2"][0], styles["evented"][0])
        self.assertNotEqual(styles["evented-x2"][1], styles["evented"][1])
        self.assertNotEqual(styles["evented-x2"][2], styles["evented-x4"][2])
        self.assertNotIn(styles["newmodel"][1],
                         {styles[m][1] for m in models if m != "newmodel"})


CLUSTER = os.path.join(BENCH, "testdata", "runs-cluster-2026-12-03.json")


def load_cluster():
    """A quick sweep at N = 1,000: one chat-evented, then two chat-evented
    on one port sharing a room through Redis (evented-x2), on a 2-CPU
    machine that other work was using (sweep --cluster 2)."""
    with open(CLUSTER) as f:
        return json.load(f)


class ClusterRun(unittest.TestCase):
    """The cluster's figures (issue 14): Redis beside the servers, the
    commands per room line, where the cores' time went, and the goals."""

    def setUp(self):
        self.results = load_cluster()
        report.derive_all(self.results)
        (self.one,) = find_run(self.results, "evented", 1000)
        (self.two,) = find_run(self.results, "evented-x2", 1000)

    def test_one_server_is_its_own_total(self):
        f = self.one["figures"]
        self.assertEqual(f["servers"], 1)
        self.assertEqual(f["total_cpu_us_per_delivery"],
                         f["cpu_us_per_delivery"])
        for key in ("redis_cpu_us_per_line", "evalsha_per_line",
                    "clients_per_server"):
            self.assertNotIn(key, f)

    def test_cluster_adds_redis_to_its_servers(self):
        f = self.two["figures"]
        self.assertEqual(f["servers"], 2)
        self.assertAlmostEqual(f["total_cpu_us_per_delivery"],
                               f["cpu_us_per_delivery"] +
                               f["redis_cpu_us_per_delivery"])
        # Per room line: a line is delivered to all N clients.
        self.assertAlmostEqual(f["redis_cpu_us_per_line"],
                               f["redis_cpu_us_per_delivery"] * 1000)
        spread = [int(c.replace(",", ""))
                  for c in f["clients_per_server"].split("/")]
        self.assertEqual(len(spread), 2)
        self.assertEqual(sum(spread), 1000)
        self.assertAlmostEqual(f["clients_max_over_mean"],
                               max(spread) / 500)

    def test_round_trips_per_room_line(self):
        f = self.two["figures"]
        # One script per line said (and a heartbeat now and then); the
        # XREADs carry batches in the closed loop, about one per line and
        # server in the open loop.
        self.assertGreater(f["evalsha_per_line"], 0.9)
        self.assertLess(f["evalsha_per_line"], 1.2)
        self.assertGreater(f["xread_per_line"], 0)
        self.assertLessEqual(f["xread_per_line"], 2.0)
        self.assertGreater(f["open_loop_xread_per_line"],
                           f["xread_per_line"])
        self.assertAlmostEqual(f["connect_evalsha_per_arrival"], 1.004)

    def test_where_the_cores_went_adds_up(self):
        for run in (self.one, self.two):
            cores = run["figures"]["cores"]
            self.assertEqual(len(cores["by_cpu"]), 2)
            for share in cores["by_cpu"].values():
                self.assertGreaterEqual(share, 0)
                self.assertLessEqual(share, 1)
            self.assertAlmostEqual(cores["busy"] + cores["idle"], 2)
            self.assertAlmostEqual(
                cores["servers"] + cores["redis"] + cores["loadgen"] +
                cores["sweep"] + cores["other"], cores["busy"], places=6)
        self.assertEqual(self.one["figures"]["cores"]["redis"], 0)
        self.assertGreater(self.two["figures"]["cores"]["redis"], 0)
        # Other work took most of a CPU in the one server's window.
        self.assertGreater(self.one["figures"]["cores_other"], 0.5)

    def test_a_stalled_cluster_window_gives_no_rate(self):
        run = copy.deepcopy(self.two)
        run["load"]["throughput"]["messages"] = 3
        f = report.derive(run)
        self.assertIn("throughput_stalled", f)
        for key in ("total_cpu_us_per_delivery", "redis_cpu_us_per_line",
                    "evalsha_per_line", "xread_per_line", "cores_busy",
                    "redis_cpu_us_per_delivery"):
            self.assertNotIn(key, f)
        # The open loop is its own window: still measured.
        self.assertIn("open_loop_xread_per_line", f)

    def test_goals(self):
        summary = report.median_figures(self.results["runs"])
        clusters = report.cluster_models(self.results)
        self.assertEqual(clusters, {"evented-x2": {"model": "evented",
                                                   "servers": 2}})
        rows = report.cluster_goal_rows(clusters, [1000], summary)
        at_1000 = [r for r in rows if "N = 1,000" in r[0] and
                   "closed loop" in r[0]][0]
        ratio = (summary[("evented-x2", 1000)]["total_cpu_us_per_delivery"]
                 / summary[("evented", 1000)]["total_cpu_us_per_delivery"])
        self.assertIn(f"{ratio:.2f} ×", at_1000[1])
        self.assertEqual(at_1000[2], "met" if ratio <= 1.3 else "NOT MET")
        at_10000 = [r for r in rows if "every client connected" in r[0]][0]
        self.assertEqual(at_10000[1:], ("not run", "not measured"))

    def test_goal_verdicts(self):
        clusters = {"evented-x2": {"model": "evented", "servers": 2}}

        def verdicts(mine, theirs, extra=None):
            """closed loop at 1,000, open loop at 1,000, every line at
            10,000."""
            summary = {("evented", 1000): theirs,
                       ("evented-x2", 1000): mine}
            summary.update(extra or {})
            rows = report.cluster_goal_rows(clusters, [1000, 10000],
                                            summary)
            pick = ("1,000: CPU per delivery, servers + Redis, ≤ 1.3 × one "
                    "chat-evented's (closed loop)",
                    "1,000: CPU per delivery, servers + Redis, ≤ 1.3 × one "
                    "chat-evented's (open loop)",
                    "every client connected")
            return [[r[2] for r in rows if p in r[0]][0] for p in pick]

        one = {"total_cpu_us_per_delivery": 0.2,
               "open_loop_total_cpu_us_per_delivery": 4.0}
        self.assertEqual(verdicts({"total_cpu_us_per_delivery": 0.26},
                                  one)[:2], ["met", "not measured"])
        self.assertEqual(verdicts({"total_cpu_us_per_delivery": 0.262,
                                   "open_loop_total_cpu_us_per_delivery":
                                   5.0}, one)[:2], ["NOT MET", "met"])
        stalled = report.cluster_goal_rows(
            clusters, [1000], {("evented", 1000): one,
                               ("evented-x2", 1000):
                               {"throughput_stalled_runs": 3}})
        self.assertEqual(stalled[0][1:], ("stalled: no rate",
                                          "not measured"))
        behind = report.cluster_goal_rows(
            clusters, [1000], {("evented", 1000): one,
                               ("evented-x2", 1000):
                               {"open_loop_behind_runs": 1}})
        self.assertEqual(behind[1][1:], ("behind its schedule: no cost "
                                         "given", "not measured"))
        full = {("evented-x2", 10000): {"runs": 3, "passed": 3,
                                        "clients_per_server":
                                        "5,012/4,988"}}
        self.assertEqual(verdicts({}, one, full)[2], "met")
        full[("evented-x2", 10000)]["passed"] = 2
        self.assertEqual(verdicts({}, one, full)[2], "NOT MET")

    def test_report_has_the_cluster_beside_one_server(self):
        folder = tempfile.mkdtemp(prefix="bench-cluster-test-")
        try:
            shutil.copy(CLUSTER, os.path.join(folder, "runs.json"))
            with open(report.build(folder)) as f:
                text = f.read()
            self.assertIn("## Clusters: K servers and Redis beside one "
                          "server", text)
            self.assertIn("| 2 × chat-evented + Redis | 1,000 | 1/1 | "
                          "514/486 |", text)
            c10k = text.split("## The C10K table")[1].split("##")[0]
            self.assertNotIn("evented-x2", c10k)
            targets = text.split("## Targets")[1].split("## Charts")[0]
            self.assertIn("evented-x2 (2 × chat-evented + Redis), N = "
                          "1,000", targets)
            self.assertIn("Other work on the machine", text)
            with open(os.path.join(folder, "runs.csv"), newline="") as f:
                rows = {r["model"]: r for r in csv.DictReader(f)}
            self.assertEqual(rows["evented"]["evalsha_per_line"], "")
            self.assertGreater(float(rows["evented-x2"]["evalsha_per_line"]),
                               0.9)
            self.assertEqual(rows["evented-x2"]["clients_per_server"],
                             "514/486")
        finally:
            shutil.rmtree(folder)


class RedisStats(unittest.TestCase):
    INFO = ("# Commandstats\r\n"
            "cmdstat_evalsha:calls=1005,usec=20100,usec_per_call=20.00,"
            "rejected_calls=0,failed_calls=0\r\n"
            "cmdstat_xread:calls=40,usec=400,usec_per_call=10.00,"
            "rejected_calls=0,failed_calls=0\r\n"
            "cmdstat_xadd:calls=1000,usec=3000,usec_per_call=3.00,"
            "rejected_calls=0,failed_calls=0\r\n"
            "cmdstat_script|load:calls=7,usec=70,usec_per_call=10.00,"
            "rejected_calls=0,failed_calls=0\r\n")

    def test_commandstats_are_parsed(self):
        stats = cluster.commandstats(self.INFO)
        self.assertEqual(stats["evalsha"], {"calls": 1005, "usec": 20100})
        self.assertEqual(stats["script|load"]["calls"], 7)

    def test_round_trips_count_what_the_servers_sent(self):
        before = {"evalsha": {"calls": 5, "usec": 100},
                  "xread": {"calls": 10, "usec": 100}}
        calls = cluster.round_trips(before, cluster.commandstats(self.INFO))
        self.assertEqual(calls["evalsha"], 1000)
        self.assertEqual(calls["xread"], 30)
        # XADD runs inside the scripts: counted by Redis, not a round trip.
        self.assertEqual(calls["round_trips"], 1000 + 30 + 7)
        self.assertEqual(calls["usec"], 20100 + 400 + 3000 + 70 - 200)
        self.assertIsNone(cluster.round_trips(None, before))


if __name__ == "__main__":
    unittest.main()
