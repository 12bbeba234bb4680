"""Per-bucket object and byte counts (z4node.storage.usage), kept by
triggers on every write: whatever order versions, late replica writes,
deletions by id, delete markers, collections of expired markers and
bucket purges come in, the counts kept equal counts computed afresh from
the tables; a data dir from before the counts gets them at start."""

import os
import sqlite3
from contextlib import closing

from hypothesis import example, given, settings, strategies as st
from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.internet.threads import blockingCallFromThread
from twisted.trial.unittest import TestCase

from z4node.storage import usage
from z4node.storage.meta import MetaStore, Version, VersionTombstone
from z4node.storage.object_records import ObjectRecords

BUCKETS = ("a", "b")


def afresh(c):
    """The counts, computed by a scan."""
    found = {}
    for bucket, count, size in c.execute(
            "SELECT bucket, count(*), sum(size) FROM versions GROUP BY bucket"):
        found.setdefault(bucket, dict.fromkeys(("objects", "bytes"), 0)).update(
            versions=count, version_bytes=size)
    for bucket, count, size in c.execute(
            "SELECT bucket, count(*), sum(size) FROM heads WHERE deleted=0 GROUP BY bucket"):
        found.setdefault(bucket, dict.fromkeys(("versions", "version_bytes"), 0)).update(
            objects=count, bytes=size)
    return found


def kept(c):
    """The counts kept, without the rows of buckets left empty."""
    return {bucket: counts for bucket, counts in usage.read(c).items() if any(counts.values())}


operations = st.lists(st.tuples(
    st.sampled_from(["put", "put", "marker", "tombstone", "tombstone", "collect", "purge"]),
    st.sampled_from(BUCKETS), st.sampled_from(["k1", "k2"]),
    st.integers(min_value=1, max_value=40),  # the HLC: writes arrive in any order
    st.integers(min_value=0, max_value=2),  # which version id
    st.integers(min_value=0, max_value=10_000)), max_size=40)


class UsageTests(TestCase):
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "meta.sqlite3")
        self.meta = MetaStore(reactor, self.path)
        self.meta.start()
        self.addCleanup(lambda: self.meta.stop())
        for bucket in BUCKETS:
            self.meta.db.write_blocking(lambda c, b=bucket: c.execute(
                "INSERT INTO buckets (name, owner, created, hlc) VALUES (?, 'o', 0, 1)", (b,)))
        self.records = ObjectRecords(self.meta, Clock())

    def test_kept_counts_equal_counts_computed_afresh(self):
        # Hypothesis runs on a thread: each step waits for the store's
        # writer, which answers through the reactor.
        @settings(max_examples=150, database=None)
        @given(operations)
        # A key's newest version deleted by its id: the head moves back to
        # the one before.
        @example([("put", "a", "k1", 5, 0, 100), ("put", "a", "k1", 6, 1, 200),
                  ("tombstone", "a", "k1", 7, 1, 0)])
        def check(ops):
            self.meta.db.write_blocking(lambda c: [c.execute(f"DELETE FROM {table}") for table in (
                "versions", "heads", "version_tombstones", "bucket_usage")])
            for index, (op, bucket, key, hlc, which, size) in enumerate(ops):
                # An HLC stamps one edit only: unique, in any order.
                self.step(op, bucket, key, hlc * 100 + index, f"v{which}", size)
                self.assertEqual(self.meta.db.read_blocking(kept),
                                 self.meta.db.read_blocking(afresh), (op, bucket, key))
        return threads.deferToThread(check)

    def step(self, op, bucket, key, hlc, version_id, size):
        if op == "put" or op == "marker":
            record = Version(bucket, key, hlc, version_id, op == "marker",
                             0 if op == "marker" else size, "e", "o", {}, [], b"")
            blockingCallFromThread(reactor, self.records.apply_version, record)
        elif op == "tombstone":
            blockingCallFromThread(reactor, self.records.apply_version,
                                   VersionTombstone(bucket, key, version_id, hlc, hlc))
        elif op == "collect":
            blockingCallFromThread(reactor, self.meta.collect_tombstones, hlc, 100)
        else:
            self.meta.db.write_blocking(lambda c: self.meta.purge_bucket_contents(c, bucket, 0))

    async def test_a_data_dir_from_before_the_counts_gets_them_at_start(self):
        for i in range(5):
            await self.records.apply_version(Version("a", f"k{i}", 10 + i, "null", False,
                                                     100 * i, "e", "o", {}, [], b""))
        await self.records.apply_version(Version("b", "gone", 20, "null", True, 0, "e", "o",
                                                 {}, [], b""))
        self.meta.stop()
        with closing(sqlite3.connect(self.path)) as c:
            for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'"
                                     " AND name LIKE 'usage_%'").fetchall():
                c.execute(f"DROP TRIGGER {name}")
            c.execute("DROP TABLE bucket_usage")
            c.execute("DELETE FROM node_settings WHERE name=?", (usage.BUILT_SETTING,))
            c.commit()
        self.meta = MetaStore(reactor, self.path)
        self.meta.start()
        self.assertEqual(await self.meta.bucket_usage(), {
            "a": {"objects": 5, "bytes": 1000, "versions": 5, "version_bytes": 1000},
            "b": {"objects": 0, "bytes": 0, "versions": 1, "version_bytes": 0}})
