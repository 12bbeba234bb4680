"""Merkle anti-entropy of object versions (z4node.replication.antientropy
over z4node.storage.merkle) on three fake nodes with real SQLite replicas:
replicas that diverged converge after one sync, with calls that grow with
the difference and not with the table; tombstones and newer edits win in
either direction; the trees kept on every write equal trees built from
scratch, as a data dir from before them gets at start."""

import os
import random

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from z4node.cluster.ring import bucket_key
from z4node.objects.tables import ObjectTables, version_entry
from z4node.replication.antientropy import MAX_ENTRIES, AntiEntropy
from z4node.storage import merkle
from z4node.storage.meta import MetaStore, Version, VersionTombstone
from z4node.storage.object_records import ObjectRecords

BUCKET = "bkt"
PARTITION = bucket_key(BUCKET)


class AntiEntropyTests(TestCase):
    def setUp(self):
        self.hlc = 1000
        self.metas = {}
        self.net = FakeNet(3, self.build)

    def build(self, cluster):
        path = os.path.join(os.path.abspath(self.mktemp()), "meta.sqlite3")
        os.makedirs(os.path.dirname(path))
        meta = MetaStore(reactor, path)
        meta.start()
        self.addCleanup(meta.stop)
        meta.db.write_blocking(lambda c: c.execute(
            "INSERT INTO buckets (name, owner, created, hlc) VALUES (?, 'o', 0, 1)",
            (BUCKET,)))
        self.metas[cluster.local.id] = meta
        tables = ObjectTables(ObjectRecords(meta, cluster.net.clock), cluster)
        tables.antientropy = AntiEntropy(cluster.net.clock, random.Random(1), cluster,
                                         tables.version_table, tables.partitions_held)
        return tables

    def version(self, key, version_id=None):
        self.hlc += 1
        return Version(BUCKET, key, self.hlc, version_id or f"v{self.hlc}", False, 1,
                       f"etag-{key}", "o", {}, [], b"x")

    async def apply_on(self, member, record):
        """Store ``record`` on one replica only, as a write it missed would
        leave the others."""
        await self.net.nodes[member].version_table.store.apply(version_entry(record))

    async def root(self, member):
        return (await self.net.nodes[member].version_table.store.merkle_nodes(
            PARTITION, [merkle.ROOT]))[merkle.ROOT]

    async def write_everywhere(self, count):
        """``count`` versions stored on every replica (each replica's own
        store, so that no write is still in flight when this returns)."""
        written = []
        for i in range(count):
            version = self.version(f"key-{i:04d}")
            for member in self.net.members:
                await self.apply_on(member, version)
            written.append(version)
        self.assertEqual(len({await self.root(m) for m in self.net.members}), 1)
        return written

    async def diverge_and_sync(self, count, differing):
        written = await self.write_everywhere(count)
        for i in range(differing):
            await self.apply_on("n1", self.version(f"only-on-n1-{i}"))
        ae = self.net.nodes["n0"].antientropy
        calls = ae.counters["calls"]
        await ae.sync(PARTITION, "n1")
        self.assertEqual(await self.root("n0"), await self.root("n1"))
        self.assertEqual(ae.counters["pulled"], differing)
        return ae.counters["calls"] - calls, written

    async def test_a_sync_costs_calls_in_proportion_to_the_difference(self):
        one, _ = await self.diverge_and_sync(300, 1)
        # The root, three levels of children, the leaves, the entries.
        self.assertEqual(one, merkle.DEPTH + 3)
        self.setUp()
        twenty, _ = await self.diverge_and_sync(300, 20)
        self.setUp()
        small, _ = await self.diverge_and_sync(30, 20)
        self.assertEqual((twenty, small), (merkle.DEPTH + 3, merkle.DEPTH + 3))
        self.setUp()
        # Past one call's worth of entries: one more call.
        many, _ = await self.diverge_and_sync(30, MAX_ENTRIES + 44)
        self.assertEqual(many, merkle.DEPTH + 4)

    async def test_equal_replicas_cost_one_call(self):
        await self.write_everywhere(50)
        ae = self.net.nodes["n2"].antientropy
        await ae.sync(PARTITION, "n0")
        self.assertEqual((ae.counters["calls"], ae.counters["pulled"], ae.counters["pushed"]),
                         (1, 0, 0))

    async def test_newest_edit_wins_in_either_direction(self):
        [kept, deleted, edited] = await self.write_everywhere(3)
        # n1 missed a deletion by id; n0 missed a metadata edit.
        self.hlc += 1
        tombstone = VersionTombstone(BUCKET, deleted.key, deleted.version_id, deleted.hlc,
                                     self.hlc)
        await self.apply_on("n0", tombstone)
        await self.apply_on("n2", tombstone)
        self.hlc += 1
        newer = Version(BUCKET, edited.key, edited.hlc, edited.version_id, False, 1,
                        "etag-edited", "o", {"tags": {"a": "b"}}, [], b"x", self.hlc)
        await self.apply_on("n1", newer)
        await self.net.nodes["n0"].antientropy.run_pass()
        for member in self.net.members:
            records = self.net.nodes[member]._records
            self.assertIsInstance(
                await records.version(BUCKET, deleted.key, deleted.version_id),
                VersionTombstone, member)
            self.assertEqual((await records.version(BUCKET, edited.key, edited.version_id))
                             .etag, "etag-edited", member)
            self.assertEqual((await records.version(BUCKET, kept.key, kept.version_id))
                             .etag, f"etag-{kept.key}", member)
        self.assertEqual(len({await self.root(m) for m in self.net.members}), 1)

    async def test_the_trees_kept_on_every_write_equal_trees_built_from_scratch(self):
        written = await self.write_everywhere(40)
        for version in written[:10]:
            self.hlc += 1
            await self.apply_on("n0", VersionTombstone(
                BUCKET, version.key, version.version_id, version.hlc, self.hlc))
        meta = self.metas["n0"]

        def snapshot(c):
            return (c.execute("SELECT * FROM merkle_buckets WHERE hash != 0"
                              " ORDER BY 1, 2").fetchall(),
                    c.execute("SELECT * FROM merkle_leaves ORDER BY 1, 2, 3, 4").fetchall())
        kept = await meta.db.read(snapshot)
        self.assertEqual(len(kept[1]), 40)
        await meta.db.write(merkle.build)
        self.assertEqual(await meta.db.read(snapshot), kept)
