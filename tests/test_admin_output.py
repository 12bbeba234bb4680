"""The ``z4`` command's terminal output (z4node.admin.output): the table,
the progress display in both forms (rich's bar on a terminal, plain lines
elsewhere), `z4 scrub status --watch` following a pass, and --json accepted
by every command. No node: the admin socket's answers are faked."""

import argparse
import io
import os

from rich.console import Console
from twisted.trial.unittest import TestCase

from z4node.admin import cli
from z4node.admin.output import ProgressDisplay, table


def plain():
    return Console(file=io.StringIO(), force_terminal=False, width=100)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class TableTests(TestCase):
    def test_aligned_columns(self):
        text = table(["NAME", "N"], [["a", 1], ["longer", None]])
        self.assertEqual(text.splitlines(), ["NAME    N", "a       1", "longer  -"])


class ProgressDisplayTests(TestCase):
    def test_plain_lines_at_each_tenth(self):
        console = plain()
        bar = ProgressDisplay("rewrapping", 200, "keys", console)
        for done in range(0, 201, 5):
            bar.update(done)
        bar.finish("rewrapped")
        lines = console.file.getvalue().splitlines()
        self.assertEqual(lines[0], "rewrapping: 0/200 keys (0%)")
        self.assertEqual(lines[1], "rewrapping: 20/200 keys (10%)")
        self.assertEqual(len(lines), 12)  # 0 %, each tenth, and the finish
        self.assertEqual(lines[-1], "rewrapped: 200/200 keys (100%)")
        self.assertNotIn("\x1b", console.file.getvalue())

    def test_plain_lines_without_a_total(self):
        console = plain()
        bar = ProgressDisplay("scrub", None, "chunks", console)
        for done in range(25):
            bar.update(done)
        bar.finish("scrub pass done")
        self.assertEqual(console.file.getvalue().splitlines(), [
            "scrub: 0 chunks", "scrub: 9 chunks", "scrub: 19 chunks",
            "scrub pass done: 24 chunks"])

    def test_terminal_bar_shows_rate_and_eta(self):
        console = Console(file=io.StringIO(), force_terminal=True, width=120,
                          color_system=None)
        clock = FakeClock()
        bar = ProgressDisplay("scrub", 100, "chunks", console, clock=clock)
        for _ in range(5):
            clock.now += 1
            bar.update(bar.completed + 10)
        out = console.file.getvalue()
        # 10 chunks a second, 50 to go: five seconds left.
        self.assertIn("50/100", out)
        self.assertIn("10 chunks/s", out)
        self.assertIn("ETA 0:00:05", out)
        self.assertIn("50%", out)
        bar.finish()

    def test_terminal_gets_its_cursor_back_after_an_error(self):
        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        with self.assertRaises(KeyboardInterrupt):
            with ProgressDisplay("rewrapping", 10, "keys", console) as bar:
                bar.update(3)
                raise KeyboardInterrupt()
        self.assertIn("\x1b[?25l", console.file.getvalue())  # hidden while drawing
        self.assertTrue(console.file.getvalue().endswith("\x1b[?25h"))  # shown again


def scrub_status(**changes):
    status = {"cursor": "", "pass_started": 1.0, "last_pass_finished": None,
              "paused": False, "bytes_verified": 0, "chunks_verified": 0, "bad_found": 0,
              "healed": 0, "unrecoverable": 0, "failures": 0, "passes": 0, "rate": 0,
              "pass_interval": 86400, "running": True}
    status.update(changes)
    return status


class Args:
    def __init__(self, data, json=False):
        self.data, self.json = data, json


class ScrubWatchTests(TestCase):
    def setUp(self):
        self.data = self.mktemp()
        for leaf, count in (("00/00", 4), ("00/01", 6), ("7f/00", 10)):
            os.makedirs(os.path.join(self.data, "chunks", leaf))
            for i in range(count):
                open(os.path.join(self.data, "chunks", leaf, f"{i:064x}"), "w").close()
        open(os.path.join(self.data, "chunks", "00", "00", "x.tmp"), "w").close()

    def follow(self, answers, first, json=False):
        """watch_scrub over the node's successive ``answers``; (result, output)."""
        asked = iter(answers)
        self.patch(cli, "call", lambda data, command: next(asked))
        console = plain()
        result = cli.watch_scrub(Args(self.data, json), first, console, sleep=lambda s: None)
        return result, console.file.getvalue()

    def test_counts_chunk_files_up_to_the_cursor(self):
        self.assertEqual(cli.chunk_files(self.data, "00/01"), (20, 10))
        self.assertEqual(cli.chunk_files(self.data, ""), (20, 0))
        self.assertEqual(cli.chunk_files(self.mktemp(), ""), (None, 0))

    def test_follows_a_pass_to_its_end(self):
        # Started with the first directory done (4 chunks before the watch).
        first = scrub_status(cursor="00/00", chunks_verified=104, bytes_verified=10)
        answers = [scrub_status(cursor="00/01", chunks_verified=110, bytes_verified=2000),
                   scrub_status(cursor="7f/00", chunks_verified=115, bytes_verified=3000),
                   scrub_status(cursor=None, chunks_verified=120, passes=1,
                                bytes_verified=5_000_000)]
        result, out = self.follow(answers, first)
        self.assertEqual(result["passes"], 1)
        lines = out.splitlines()
        self.assertEqual(lines[0], "scrub (10 bytes verified in all): 4/20 chunks (20%)")
        self.assertEqual(lines[-1], "scrub pass done: 20/20 chunks (100%)")
        self.assertIn("scrub (2.0 kB verified in all): 10/20 chunks (50%)", lines)

    def test_stops_when_paused(self):
        result, out = self.follow([scrub_status(paused=True, running=False,
                                                chunks_verified=3)], scrub_status())
        self.assertTrue(result["paused"])
        self.assertEqual(out.splitlines()[-1], "scrub paused: 3/20 chunks (15%)")

    def test_json_draws_nothing(self):
        result, out = self.follow([scrub_status(cursor=None, passes=1)], scrub_status(),
                                  json=True)
        self.assertEqual(out, "")
        self.assertEqual(result["passes"], 1)

    def test_between_passes_returns_at_once(self):
        result, out = self.follow([], scrub_status(cursor=None))
        self.assertEqual(out, "")
        self.assertIsNone(result["cursor"])


def repair_status(passes, progress=None, repaired=0):
    return {"passes": passes, "progress": progress, "pulled": 7, "pushed": 3,
            "sync_failures": 0, "last_pass": {"seconds": 1.25, "repaired": repaired},
            "chunks": {"chunks_pulled": 2, "chunks_pushed": 1, "sync_failures": 1}}


class RepairWatchTests(TestCase):
    def test_follows_the_pass_it_started_to_its_end(self):
        answers = iter([repair_status(4, {"done": 3, "total": 12}),
                        repair_status(4, {"done": 12, "total": 12}),
                        repair_status(5, repaired=9)])
        # A pass was under way: the node answers that the one started for
        # this command ends when passes reaches 5.
        first = dict(repair_status(3, {"done": 1, "total": 12}), until=5)
        asked = []

        def call(data, command):
            asked.append(command)
            return first if command == "cluster.repair" else next(answers)
        self.patch(cli, "call", call)
        console = plain()
        result, text = cli.repair_command(Args("data"), console, sleep=lambda s: None)
        self.assertEqual(asked, ["cluster.repair"] + ["cluster.repair.status"] * 3)
        self.assertEqual(result["passes"], 5)
        lines = console.file.getvalue().splitlines()
        self.assertEqual(lines[0], "anti-entropy: 1/12 syncs (8%)")
        self.assertIn("anti-entropy: 12/12 syncs (100%)", lines)
        self.assertEqual(lines[-1], "anti-entropy pass done: 12/12 syncs (100%)")
        self.assertEqual(text, "Anti-entropy pass done in 1.2 s: 9 entries and chunks "
                               "repaired (since start: entries 7 pulled, 3 pushed; chunks 2 "
                               "pulled, 1 pushed; 1 syncs failed).")


class JsonEverywhereTests(TestCase):
    def test_every_command_takes_json_after_its_name(self):
        top = cli.parser()
        commands = []

        def walk(parser, argv):
            nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not nested:
                commands.append((argv, parser))
                return
            for name, child in nested[0].choices.items():
                walk(child, argv + [name])
        walk(top, [])
        for argv, command in commands:
            argv = argv + [x.metavar or "X" for x in command._actions if not x.option_strings]
            if argv[:1] == ["bucket"] and argv[1] in ("allow", "deny"):
                argv += ["--key", "k"]
            args = top.parse_args(argv + ["--json"])
            self.assertTrue(args.json, argv)
            self.assertFalse(top.parse_args(argv).json, argv)
        self.assertGreaterEqual(len(commands), 15)
