"""The hybrid logical clock: monotonic across restarts with the wall clock
set back, a durable high-water mark, and a bound on a peer's drift."""

import os

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_lifecycle import FakeClockNode
from tests.test_storage import collect
from z4node import hlc as hlclib
from z4node.hlc import HybridLogicalClock
from z4node.objects import versioning
from z4node.storage.meta import HLC_SETTING

START = 1_717_243_200.0


class ClockTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.hlc = HybridLogicalClock(self.clock)

    def test_a_peer_too_far_ahead_is_refused(self):
        self.hlc.now()
        ahead = hlclib.from_seconds(START + 61)
        self.assertFalse(self.hlc.observe(ahead))
        self.assertLess(self.hlc.now(), ahead)
        within = hlclib.from_seconds(START + 59)
        self.assertTrue(self.hlc.observe(within))
        self.assertGreater(self.hlc.now(), within)

    def test_the_drift_bound_is_a_setting(self):
        strict = HybridLogicalClock(self.clock, max_drift_seconds=1)
        self.assertFalse(strict.observe(hlclib.from_seconds(START + 2)))

    def test_seeding_is_never_refused(self):
        # The node's own rows, written while its clock ran an hour ahead.
        stored = hlclib.from_seconds(START + 3600)
        self.hlc.seed(stored)
        self.assertGreater(self.hlc.now(), stored)

    def test_the_high_water_mark_is_written_ahead_in_steps(self):
        saved = []
        pending = []

        def save(mark):
            saved.append(mark)
            pending.append(Deferred())
            return pending[-1]
        first = self.hlc.now()
        self.hlc.persist_with(save)
        self.assertEqual(len(saved), 1)
        self.assertGreaterEqual(saved[0], first + (HybridLogicalClock.persist_ahead_ms << 16))
        pending[0].callback(None)
        # Timestamps well inside the promise cost no write.
        for _ in range(1000):
            self.clock.advance(0.001)
            self.hlc.now()
        self.assertEqual(len(saved), 1)
        # Past half of it, the next mark goes out, ahead of what is issued.
        self.clock.advance(HybridLogicalClock.persist_ahead_ms / 1000)
        issued = self.hlc.now()
        self.assertEqual(len(saved), 2)
        self.assertGreater(saved[1], issued)

    def test_a_failed_save_is_logged_and_retried(self):
        attempts = []

        def save(mark):
            attempts.append(mark)
            if len(attempts) == 1:
                return fail(OSError("disk full"))
            return succeed(None)
        self.hlc.persist_with(save)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.hlc.now()
        self.assertEqual(len(attempts), 2)


class RestartTests(TestCase):
    """A node restarted with its wall clock set back still orders its
    writes after the ones it made before."""

    async def node(self, directory, when):
        clock = Clock()
        clock.advance(when)
        node = FakeClockNode(directory, clock)
        self.addCleanup(close, node)
        return await node.open()

    async def test_a_put_after_a_restart_with_the_clock_set_back_wins(self):
        directory = self.mktemp()
        os.makedirs(directory)
        before = await self.node(directory, START)
        await before.bucket("bkt", [], status=versioning.ENABLED)
        await before.put("bkt", "k", b"old")
        close(before)
        after = await self.node(directory, START - 60)
        await after.put("bkt", "k", b"new")
        latest = await after.objects.head_object("bkt", "k")
        self.assertEqual(await collect(after.objects.read(latest, 0, latest.size - 1)), b"new")
        items, _ = await after.objects.list_versions("bkt", "", "", None, None, 10)
        self.assertEqual([is_latest for _, is_latest in items], [True, False])

    async def test_every_table_seeds_the_clock(self):
        """An open multipart upload is the newest row (no version, key or
        bucket is newer): the restarted clock still starts past it."""
        directory = self.mktemp()
        os.makedirs(directory)
        before = await self.node(directory, START)
        await before.objects.create_bucket("bkt", before.key)
        before.clock.advance(3600)
        upload = await before.objects.create_upload("bkt", "k", owner="u", meta={})
        await before.meta.db.write(lambda c: c.execute(
            "DELETE FROM node_settings WHERE name=?", (HLC_SETTING,)))
        close(before)
        after = await self.node(directory, START)
        self.assertGreater(after.hlc.now(), upload.hlc)

    async def test_the_high_water_mark_seeds_the_clock(self):
        """Timestamps issued but never stored are still never reissued."""
        directory = self.mktemp()
        os.makedirs(directory)
        before = await self.node(directory, START)
        issued = before.hlc.now()
        await until_saved(before)
        close(before)
        after = await self.node(directory, START - 60)
        self.assertGreater(after.hlc.now(), issued)


def close(node):
    """Close a node once (a test restarts it; the cleanup closes the rest)."""
    if not getattr(node, "closed", False):
        node.closed = True
        node.close()


async def until_saved(node):
    """The mark write in flight lands before the node closes (the writer
    commits in order, so one more write waits for it)."""
    await node.meta.set_setting("flush", "1")
