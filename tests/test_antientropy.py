"""Merkle anti-entropy of object versions, multipart uploads and their parts
(z4node.replication.antientropy over z4node.storage.merkle) on three fake
nodes with real SQLite replicas: replicas that diverged converge after one
sync, with calls that grow with the difference and not with the table;
tombstones and newer edits win in either direction; an upload a replica
missed comes back with its parts, and an upload's end wins over the upload
and drops its parts everywhere; the trees kept on every write equal trees
built from scratch, as a data dir from before them gets at start."""

import os
import random

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from z4node.cluster.ring import bucket_key
from z4node.objects.tables import ObjectTables, part_entry, upload_entry, version_entry
from z4node.replication.antientropy import MAX_ENTRIES, AntiEntropy
from z4node.storage import merkle
from z4node.storage.meta import MetaStore, Part, Upload, Version, VersionTombstone
from z4node.storage.object_records import EndedUpload, ObjectRecords

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
        tables.antientropy = AntiEntropy(
            cluster.net.clock, random.Random(1), cluster,
            [tables.version_table, tables.upload_table, tables.part_table],
            tables.partitions_held)
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
        await ae.sync(self.net.nodes["n0"].version_table, PARTITION, "n1")
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

    async def test_a_repair_asked_during_a_pass_gets_a_pass_of_its_own(self):
        await self.write_everywhere(5)
        await self.apply_on("n1", self.version("missed-by-n0"))
        ae = self.net.nodes["n0"].antientropy
        self.assertEqual(ae.start_pass(), 1)
        self.assertTrue(ae.status()["running"])
        # Asked again while that pass runs: one more pass, after it.
        self.assertEqual(ae.start_pass(), 2)
        self.assertEqual(ae.start_pass(), 2)
        while ae.counters["passes"] < 2:
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)
        status = ae.status()
        self.assertEqual((status["passes"], status["running"], status["progress"]),
                         (2, False, None))
        # Each partition's last sync: what it repaired, when, and no failure.
        self.assertEqual(status["partitions"][BUCKET]["repaired"], 0)
        self.assertFalse(status["partitions"][BUCKET]["failed"])
        self.assertEqual(ae.last_pass["repaired"], 0)
        self.assertEqual(ae.counters["pulled"], 1)

    async def test_a_pass_reports_its_progress_and_each_partition(self):
        await self.write_everywhere(3)
        self.net.unreachable.add("n2")
        ae = self.net.nodes["n0"].antientropy
        seen = []
        sync = ae.sync

        async def watched(table, partition, peer):
            seen.append(dict(ae.progress))
            return await sync(table, partition, peer)
        ae.sync = watched
        await ae.run_pass()
        # Three tables, one bucket, two other owners.
        self.assertEqual(seen, [{"done": i, "total": 6} for i in range(6)])
        self.assertIsNone(ae.progress)
        state = ae.status()["partitions"][BUCKET]
        self.assertTrue(state["failed"])
        self.assertEqual(state["synced"], self.net.clock.seconds())

    async def test_equal_replicas_cost_one_call(self):
        await self.write_everywhere(50)
        ae = self.net.nodes["n2"].antientropy
        await ae.sync(self.net.nodes["n2"].version_table, PARTITION, "n0")
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

    async def upload_on(self, members, upload_id, parts):
        """An upload with ``parts`` parts stored on ``members`` only."""
        self.hlc += 1
        upload = Upload(upload_id, BUCKET, f"big-{upload_id}", self.hlc, "o", {})
        for member in members:
            tables = self.net.nodes[member]
            await tables.upload_table.store.apply(upload_entry(upload))
            for number in range(1, parts + 1):
                part = Part(number, f"etag-{number}", 5, [], self.hlc + number, {})
                await tables.part_table.store.apply({"upload": upload_entry(upload),
                                                     "part": part_entry(part)})
        return upload

    async def state(self, member, upload_id):
        records = self.net.nodes[member]._records
        record = await records.upload(upload_id)
        return type(record).__name__, [p.part_number for p in
                                       await records.parts(upload_id, 0, 100)]

    async def roots(self, table):
        return {(await getattr(self.net.nodes[m], table).store.merkle_nodes(
            PARTITION, [merkle.ROOT]))[merkle.ROOT] for m in self.net.members}

    async def test_a_missed_upload_comes_back_with_its_parts(self):
        await self.upload_on(["n0", "n1", "n2"], "everywhere", 2)
        await self.upload_on(["n0"], "missed", 3)
        repaired = await self.net.nodes["n0"].antientropy.run_pass()
        # The upload and its three parts, to each of the two others.
        self.assertEqual(repaired, 8)
        for member in self.net.members:
            self.assertEqual(await self.state(member, "missed"), ("Upload", [1, 2, 3]))
        self.assertEqual(len(await self.roots("upload_table")), 1)
        self.assertEqual(len(await self.roots("part_table")), 1)

    async def test_an_upload_end_wins_and_drops_its_parts_everywhere(self):
        upload = await self.upload_on(["n0", "n1", "n2"], "up", 2)
        # n2 has a third part the others missed; n0 saw the upload end.
        await self.upload_on(["n2"], "up", 3)
        self.hlc += 10
        await self.net.nodes["n0"].upload_table.store.apply(upload_entry(
            EndedUpload("up", BUCKET, upload.key, b"", "", self.hlc)))
        await self.net.nodes["n1"].antientropy.run_pass()
        for member in self.net.members:
            self.assertEqual(await self.state(member, "up"), ("EndedUpload", []), member)
        ae = self.net.nodes["n1"].antientropy
        self.assertEqual(ae.counters["sync_failures"], 0)
        self.assertEqual(len(await self.roots("upload_table")), 1)
        self.assertEqual(await self.roots("part_table"), {0})

    async def test_two_different_ends_of_an_upload_converge_on_the_later(self):
        # An abort through one node raced a complete through another: n0
        # and n1 saw the abort (stamped, as ObjectService does, with the
        # upload's HLC), n2 the complete (stamped with its version's, later).
        upload = await self.upload_on(["n0", "n1", "n2"], "raced", 2)
        aborted = EndedUpload("raced", BUCKET, upload.key, b"", "", upload.hlc)
        for member in ("n0", "n1"):
            await self.net.nodes[member].upload_table.store.apply(upload_entry(aborted))
        self.hlc += 10
        completed = EndedUpload("raced", BUCKET, upload.key, b"\x01", "v-done", self.hlc)
        await self.net.nodes["n2"].upload_table.store.apply(upload_entry(completed))
        self.assertEqual(len(await self.roots("upload_table")), 2)
        # A pass on n0 pulls the complete from n2; one on n1 then too.
        for member in ("n0", "n1"):
            await self.net.nodes[member].antientropy.run_pass()
        self.assertEqual(len(await self.roots("upload_table")), 1)
        for member in self.net.members:
            ended = await self.net.nodes[member]._records.upload("raced")
            self.assertEqual((ended.version_id, ended.hlc), ("v-done", self.hlc), member)
        # An end older than the one held changes nothing.
        await self.net.nodes["n1"].upload_table.store.apply(upload_entry(aborted))
        self.assertEqual((await self.net.nodes["n1"]._records.upload("raced")).version_id,
                         "v-done")
        self.assertEqual(self.net.nodes["n0"].antientropy.counters["refused"], 0)

    async def test_the_trees_kept_on_every_write_equal_trees_built_from_scratch(self):
        written = await self.write_everywhere(40)
        for version in written[:10]:
            self.hlc += 1
            await self.apply_on("n0", VersionTombstone(
                BUCKET, version.key, version.version_id, version.hlc, self.hlc))
        await self.upload_on(["n0"], "open", 3)
        ended = await self.upload_on(["n0"], "ended", 2)
        self.hlc += 10
        await self.net.nodes["n0"].upload_table.store.apply(upload_entry(
            EndedUpload("ended", BUCKET, ended.key, b"", "", self.hlc)))
        meta = self.metas["n0"]

        def snapshot(c):
            return (c.execute("SELECT * FROM merkle_buckets WHERE hash != 0"
                              " ORDER BY 1, 2").fetchall(),
                    c.execute("SELECT * FROM merkle_leaves ORDER BY 1, 2, 3, 4").fetchall())
        kept = await meta.db.read(snapshot)
        # 40 version slots, 2 uploads (one ended) and the open one's 3 parts.
        self.assertEqual(len(kept[1]), 40 + 2 + 3)
        await meta.db.write(merkle.build)
        self.assertEqual(await meta.db.read(snapshot), kept)
