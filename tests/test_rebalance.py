"""Rebalancing (z4node.replication.rebalance) on fake nodes with real chunk
stores, real SQLite records and a fake clock: after a join, a member
forgotten, or both one after the other, every chunk ends on exactly its
owners in the new ring, each added copy is sent once, and displaced copies
are deleted only once their new owners hold them; a bucket's records
reach the owner a join added; a restart moves nothing."""

import os
from types import SimpleNamespace

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from z4node.cluster.ring import Ring, RingMember, bucket_key
from z4node.objects.tables import ObjectTables, version_entry
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.rebalance import LAYOUT_FILE, Rebalancer
from z4node.storage.chunks import ChunkStore, chunk_hash
from z4node.storage.meta import MetaStore, Part, Upload, Version, VersionTombstone
from z4node.storage.object_records import ObjectRecords

CHUNKS = 40


class NoHints:
    """The one thing rebalancing asks of the hint queue."""

    def holds_chunk(self, digest):
        return defer.succeed(False)


class FakeNodes:
    """Four fake nodes, each built by the test case's ``build(cluster)`` in
    a directory of its own under ``self.base``, and how to wait for them."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.net = FakeNet(4, self.build)
        self.clock = self.net.clock

    async def until(self, condition, what):
        """Run the fake clock (letting disk threads answer) until ``condition()``."""
        for _ in range(2000):
            if condition():
                return
            self.clock.advance(1)
            await deferLater(reactor, 0.002, lambda: None)
        self.fail(f"never happened: {what}")

    def live(self):
        return [m for m in self.net.members if self.net.members[m].state.value == "alive"]

    def settled(self):
        fingerprint = self.net.clusters["n0"].ring.fingerprint()
        return all(self.net.nodes[m].rebalancer.status()["state"] == "settled"
                   and self.net.nodes[m].rebalancer.settled.fingerprint() == fingerprint
                   for m in self.live())


class RebalanceTests(FakeNodes, TestCase):
    def build(self, cluster):
        directory = os.path.join(self.base, cluster.local.id)
        chunks = ChunkStore(reactor, os.path.join(directory, "chunks"))
        chunks.start()
        self.addCleanup(chunks.stop)
        manager = ReplicatedChunks(chunks, cluster)
        rebalancer = Rebalancer(cluster.net.clock, cluster, chunks, NoHints(),
                                os.path.join(directory, LAYOUT_FILE), strays=manager.strays)
        rebalancer.rate = 1e12
        rebalancer.startService()
        self.addCleanup(rebalancer.stopService)
        return SimpleNamespace(chunks=chunks, rebalancer=rebalancer, manager=manager)

    async def write(self):
        digests = []
        members = sorted(self.net.members)
        for i in range(CHUNKS):
            data = os.urandom(1000 + i)
            digest = chunk_hash(data)
            await self.net.nodes[members[i % len(members)]].manager.put(digest, data)
            digests.append(digest)
        await self.until(self.settled, "every node settles on the first ring")
        return digests

    def holders(self, digest):
        return {m for m in self.live()
                if os.path.exists(self.net.nodes[m].chunks.path(digest))}

    def total(self, counter):
        return sum(self.net.nodes[m].rebalancer.counters[counter] for m in self.net.nodes)

    def assert_placed(self, digests):
        ring = self.net.clusters["n0"].ring
        for digest in digests:
            self.assertEqual(self.holders(digest), set(ring.owners(digest, 3)), digest.hex())

    async def test_a_join_moves_only_what_the_new_node_owns(self):
        digests = await self.write()
        self.net.add("n4", self.build)
        await self.until(self.settled, "every node settles on the ring with n4")
        self.assert_placed(digests)
        ring = self.net.clusters["n0"].ring
        gained = sum(1 for d in digests if "n4" in ring.owners(d, 3))
        self.assertGreater(gained, 0)
        # Each of n4's copies was sent once, and one old copy of each dropped.
        self.assertEqual(self.total("moved_chunks"), gained)
        self.assertEqual(self.total("dropped_copies"), gained)
        self.assertEqual(self.total("unplaced"), 0)

    async def moved_chunks(self, before, after, count):
        """``count`` new chunks whose owners differ between two rings."""
        found = []
        while len(found) < count:
            data = os.urandom(1000)
            digest = chunk_hash(data)
            if set(before.owners(digest, 3)) != set(after.owners(digest, 3)):
                found.append((digest, data))
        return found

    async def io_done(self, condition, what):
        """Wait for disk threads, without moving the fake clock, until
        ``condition()``."""
        for _ in range(500):
            if condition():
                return
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"never happened: {what}")

    async def test_writes_during_a_move_reach_both_owner_sets_and_strays_are_cleared(self):
        digests = await self.write()
        before = self.net.clusters["n0"].ring
        self.net.add("n4", self.build)
        after = self.net.clusters["n0"].ring
        writer = "n0"
        await self.until(lambda: self.net.clusters[writer].previous_ring is not None,
                         "the writer knows data is moving")
        # Before any pass: a chunk goes to its owners in both rings.
        for digest, data in await self.moved_chunks(before, after, 4):
            await self.net.nodes[writer].manager.put(digest, data)
            both = set(before.owners(digest, 3)) | set(after.owners(digest, 3))
            await self.io_done(lambda: self.holders(digest) == both, "every put lands")
            digests.append(digest)
        await self.until(self.settled, "every node settles on the ring with n4")
        self.assert_placed(digests)
        # A coordinator whose own pass has not ended still writes to the
        # previous owners, which have settled: what they are sent after
        # their walk is a stray, passed on and dropped at their next check.
        self.net.clusters[writer].previous_ring = before
        late = await self.moved_chunks(before, after, 4)
        for digest, data in late:
            await self.net.nodes[writer].manager.put(digest, data)
            leaving = set(before.owners(digest, 3)) - set(after.owners(digest, 3))
            await self.io_done(lambda: all(digest in self.net.nodes[m].manager.strays
                                           for m in leaving), "every late put lands")
        everything = digests + [digest for digest, _ in late]
        await self.until(lambda: all(self.holders(d) == set(after.owners(d, 3))
                                     for d in everything), "the strays are cleared")
        self.assertFalse(any(self.net.nodes[m].manager.strays for m in self.net.nodes))
        self.assertGreater(self.total("strays_dropped"), 0)

    async def test_a_forgotten_member_s_chunks_are_copied_again(self):
        digests = await self.write()
        before = self.net.clusters["n0"].ring
        self.net.forget("n2")
        await self.until(self.settled, "every node settles on the ring without n2")
        self.assert_placed(digests)
        # A copy sent for each chunk n2 owned, by one survivor.
        lost = sum(1 for d in digests if "n2" in before.owners(d, 3))
        self.assertEqual(self.total("moved_chunks"), lost)

    async def test_a_join_then_another_ends_placed_for_the_newest_ring(self):
        digests = await self.write()
        self.net.add("n4", self.build)
        await self.until(lambda: any(self.net.nodes[m].rebalancer.counters["passes"]
                                     for m in self.net.nodes), "a pass starts")
        self.net.add("n5", self.build)
        await self.until(self.settled, "every node settles on the ring with n4 and n5")
        self.assert_placed(digests)
        self.assertEqual(self.total("unplaced"), 0)

    async def test_a_new_owner_down_keeps_the_displaced_copy(self):
        digests = await self.write()
        self.net.add("n4", self.build)
        self.net.kill("n4")
        ring = self.net.clusters["n0"].ring
        gained = [d for d in digests if "n4" in ring.owners(d, 3)]
        await self.until(lambda: self.total("passes_completed") >= 4, "the passes end")
        for digest in gained:
            # Still three copies: the displaced owner kept its own.
            self.assertEqual(len(self.holders(digest)), 3)
        self.assertEqual(self.total("dropped_copies"), 0)
        self.assertGreaterEqual(self.total("unplaced"), len(gained))

    async def test_a_drained_node_holds_no_last_copy(self):
        digests = await self.write()
        drained = self.net.nodes["n1"]
        self.assertFalse(drained.rebalancer.drained())
        await self.net.clusters["n1"].drain()
        await self.until(drained.rebalancer.drained, "n1 drains")
        await self.until(self.settled, "every node settles on the ring without n1")
        self.assertEqual([files for _, _, files in os.walk(
            os.path.join(self.base, "n1", "chunks")) if files], [])
        ring = self.net.clusters["n0"].ring
        self.assertNotIn("n1", ring)
        for digest in digests:
            holders = {m for m in self.net.members
                       if os.path.exists(self.net.nodes[m].chunks.path(digest))}
            self.assertEqual(holders, set(ring.owners(digest, 3)))

    async def test_a_pass_that_left_a_chunk_unplaced_runs_again(self):
        digests = await self.write()
        self.net.add("n4", self.build)
        self.net.unreachable.add("n4")
        await self.until(lambda: self.total("passes_completed") >= 4, "the passes end")
        self.assertFalse(self.settled())
        self.net.unreachable.discard("n4")
        await self.until(self.settled, "a later pass places what was left")
        self.assert_placed(digests)

    async def test_a_chunk_not_yet_moved_is_read_from_its_previous_owners(self):
        digests = await self.write()
        before = self.net.clusters["n0"].ring
        self.net.add("n4", self.build)
        self.joined_at = self.clock.seconds()
        ring = self.net.clusters["n0"].ring
        digest = next(d for d in digests if "n4" in ring.owners(d, 3))
        [displaced] = set(before.owners(digest, 3)) - set(ring.owners(digest, 3))
        # Before any pass: only the displaced owner has a copy.
        for member in ring.owners(digest, 3):
            if member != "n4":
                os.unlink(self.net.nodes[member].chunks.path(digest))
        # Read through a node that knows the previous ring (not the new one).
        member = next(m for m in ring.owners(digest, 3) if m != "n4")
        await self.until(lambda: self.net.clusters[member].previous_ring is not None,
                         "the node knows data is moving")
        self.assertLess(self.clock.seconds() - self.joined_at, Rebalancer.settle_seconds)
        reader = self.net.nodes[member].manager
        self.assertEqual(chunk_hash(await reader.get(digest)), digest)
        self.assertEqual(reader.counters["found_on_previous_owners"], 1)
        self.assertTrue(os.path.exists(self.net.nodes[displaced].chunks.path(digest)))

    async def test_a_pass_cut_by_a_crash_resumes_at_its_cursor(self):
        digests = await self.write()
        before = self.net.clusters["n0"].ring
        self.net.forget("n2")
        ring = self.net.clusters["n0"].ring
        # n0 sends a copy of each chunk it shares with n2, slowly: one a second.
        sender = self.net.nodes["n0"].rebalancer
        sender.rate = 1000
        await self.until(lambda: (sender.progress or 0) > 0.4, "n0's pass is under way")
        self.clock.advance(Rebalancer.save_interval)
        await self.until(lambda: sender.cursor is not None, "a cursor exists")
        sender.stopService()  # as a crash would, once the cursor was saved
        path = os.path.join(self.base, "n0", LAYOUT_FILE)
        await self.until(lambda: "pass" in open(path).read() and
                         '"after"' in open(path).read(), "the cursor is on disk")
        self.net.clusters["n0"].subscribers.remove(sender._member_changed)
        # Writes go on through another node while n0's pass is cut.
        for digest, data in await self.moved_chunks(before, ring, 4):
            await self.net.nodes["n1"].manager.put(digest, data)
            digests.append(digest)
        again = Rebalancer(self.clock, self.net.clusters["n0"], self.net.nodes["n0"].chunks,
                           NoHints(), path, strays=self.net.nodes["n0"].manager.strays)
        again.rate = 1e12
        visited = []
        place = again._place

        async def recorded(digest, old, new):
            visited.append(digest)
            await place(digest, old, new)
        again._place = recorded
        again.startService()
        self.addCleanup(again.stopService)
        cursor = again.cursor["after"]
        self.assertTrue(cursor)
        self.net.nodes["n0"].rebalancer = again
        await self.until(self.settled, "every node settles without n2")
        self.assert_placed(digests)
        # The resumed pass walked only the directories after its cursor.
        self.assertTrue(visited)
        self.assertTrue(all(f"{d.hex()[:2]}/{d.hex()[2:4]}" > cursor for d in visited))
        self.assertTrue(any(f"{d.hex()[:2]}/{d.hex()[2:4]}" <= cursor
                            for d in digests if "n0" in before.owners(d, 3)))
        self.assertEqual(ring.fingerprint(), again.settled.fingerprint())

    async def test_a_restart_moves_nothing(self):
        await self.write()
        path = os.path.join(self.base, "n1", LAYOUT_FILE)
        await self.until(lambda: os.path.exists(path), "the settled ring is saved")
        old = self.net.nodes["n1"].rebalancer
        old.stopService()
        cluster = self.net.clusters["n1"]
        cluster.subscribers.remove(old._member_changed)
        again = Rebalancer(self.clock, cluster, self.net.nodes["n1"].chunks, NoHints(), path)
        again.startService()
        self.addCleanup(again.stopService)
        self.assertEqual(again.settled.fingerprint(), old.settled.fingerprint())
        self.clock.advance(Rebalancer.settle_seconds + Rebalancer.check_interval)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(again.counters["passes"], 0)
        self.assertEqual(again.status()["state"], "settled")


class RecordRebalanceTests(FakeNodes, TestCase):
    """Object records of buckets whose owners changed reach the added owner."""

    BUCKETS = [f"bucket-{i}" for i in range(8)]

    def build(self, cluster):
        directory = os.path.join(self.base, cluster.local.id)
        os.makedirs(directory)
        meta = MetaStore(reactor, os.path.join(directory, "meta.sqlite3"))
        meta.start()
        self.addCleanup(meta.stop)
        meta.db.write_blocking(lambda c: c.executemany(
            "INSERT INTO buckets (name, owner, created, hlc) VALUES (?, 'o', 0, 1)",
            [(b,) for b in self.BUCKETS]))
        chunks = ChunkStore(reactor, os.path.join(directory, "chunks"))
        chunks.start()
        self.addCleanup(chunks.stop)
        records = ObjectRecords(meta, cluster.net.clock)
        tables = ObjectTables(records, cluster)
        rebalancer = Rebalancer(cluster.net.clock, cluster, chunks, NoHints(),
                                os.path.join(directory, LAYOUT_FILE), tables=tables)
        rebalancer.startService()
        self.addCleanup(rebalancer.stopService)
        return SimpleNamespace(meta=meta, records=records, tables=tables, chunks=chunks,
                               manager=ReplicatedChunks(chunks, cluster),
                               rebalancer=rebalancer)

    async def write_records(self):
        hlc = 1000
        for n, bucket in enumerate(self.BUCKETS):
            for i in range(3):
                hlc += 1
                version = Version(bucket, f"key-{i}", hlc, f"v{hlc}", False, 1, "etag", "o",
                                  {}, [], b"x")
                await self.net.nodes[f"n{n % 4}"].tables.write_version(version)
            hlc += 1
            await self.net.nodes["n0"].tables.write_version(
                VersionTombstone(bucket, "key-0", f"v{hlc - 3}", hlc - 3, hlc))
            upload = Upload(f"up-{bucket}", bucket, "big", hlc, "o", {})
            await self.net.nodes["n1"].tables.write_upload(upload)
            await self.net.nodes["n1"].tables.write_part(
                upload, Part(1, "etag-1", 5, [], hlc, {}))

    async def test_a_join_sends_the_added_owner_its_buckets_records(self):
        await self.write_records()
        await self.until(self.settled, "every node settles on the first ring")
        self.net.add("n4", self.build)
        await self.until(self.settled, "every node settles on the ring with n4")
        gained = [b for b in self.BUCKETS if "n4" in self.net.nodes["n0"].tables.owners(b)]
        self.assertTrue(gained)
        new = self.net.nodes["n4"].records
        for bucket in gained:
            self.assertEqual([v.key for v in await new.versions_after(bucket, None, 10)],
                             ["key-1", "key-2"])
            [tombstone] = await new.tombstones_after(bucket, None, 10)
            self.assertEqual(tombstone.key, "key-0")
            [upload] = await new.uploads_of(bucket)
            self.assertEqual([p.etag for p in await new.parts(upload.upload_id, 0, 10)],
                             ["etag-1"])
        for bucket in set(self.BUCKETS) - set(gained):
            self.assertEqual(await new.versions_after(bucket, None, 10), [])

    async def test_records_move_before_the_chunk_walk(self):
        # Until a bucket's added owner has its records, listings through it
        # disagree on every key; the chunk walk can take hours.
        await self.write_records()
        ring = self.net.clusters["n0"].ring
        for i in range(CHUNKS):
            data = os.urandom(500 + i)
            for owner in ring.owners(chunk_hash(data), 3):
                await self.net.nodes[owner].chunks.put_chunk(chunk_hash(data), data)
        await self.until(self.settled, "every node settles on the first ring")
        start = len(self.net.calls)
        self.net.add("n4", self.build)
        await self.until(self.settled, "every node settles on the ring with n4")
        calls = self.net.calls[start:]
        both = 0
        for sender in {source for source, target, op in calls
                       if target == "n4" and op.startswith("table.")}:
            ops = [op.split(".")[0] for source, target, op in calls
                   if (source, target) == (sender, "n4")]
            if "chunk" in ops:
                both += 1
                self.assertLess(len(ops) - 1 - ops[::-1].index("table"), ops.index("chunk"),
                                sender)
        self.assertGreater(both, 0)

    async def test_writes_during_a_move_reach_both_owner_sets(self):
        await self.until(self.settled, "every node settles on the first ring")
        before = self.net.clusters["n0"].ring
        self.net.add("n4", self.build)
        await self.until(lambda: all(self.net.clusters[m].previous_ring is not None
                                     for m in self.live() if m != "n4"),
                         "the nodes know data is moving")
        bucket = next(b for b in self.BUCKETS
                      if "n4" in self.net.nodes["n0"].tables.owners(b))
        old_owners = before.owners(bucket_key(bucket), 3)
        new_owners = self.net.nodes["n0"].tables.owners(bucket)
        # One owner that stays does not answer: the new owners' majority
        # is the other one and n4, so only the leaving owner's copy makes
        # a majority of the old owners.
        silent = next(m for m in new_owners if m in old_owners)
        self.net.unreachable.add(silent)
        written = []
        for i, via in enumerate(m for m in ["n0", "n1", "n2", "n3"] if m != silent):
            version = Version(bucket, f"during-{i}", 7000 + i, f"v{7000 + i}", False, 1,
                              f"etag-{i}", "o", {}, [], b"x")
            await self.net.nodes[via].tables.write_version(version)
            written.append(version)

        def holders(version):
            return {m for m in self.live() if self.net.nodes[m].meta.db.read_blocking(
                lambda c: c.execute("SELECT count(*) FROM versions WHERE version_id=?",
                                    (version.version_id,)).fetchone()[0])}
        for version in written:
            # A majority of each owner set acknowledged it.
            self.assertGreaterEqual(len(holders(version) & set(old_owners)), 2)
            self.assertGreaterEqual(len(holders(version) & set(new_owners)), 2)
        self.net.unreachable.clear()
        await self.until(self.settled, "every node settles on the ring with n4")
        for member in self.live():
            for version in written:
                found = await self.net.nodes[member].tables.latest(bucket, version.key)
                self.assertEqual(found.etag, version.etag, member)

    async def test_a_key_not_yet_moved_is_read_from_its_previous_owners(self):
        before = self.net.clusters["n0"].ring
        bucket = next(b for b in self.BUCKETS
                      if "n4" in Ring([RingMember(m) for m in ("n0", "n1", "n2", "n3", "n4")])
                      .owners(bucket_key(b), 3))
        old_owners = before.owners(bucket_key(bucket), 3)
        older = Version(bucket, "photo", 5000, "v5000", False, 1, "etag-old", "o", {}, [],
                        b"x")
        for member in old_owners:
            await self.net.nodes[member].tables.version_table.store.apply(
                version_entry(older))
        await self.until(self.settled, "every node settles on the first ring")
        self.net.add("n4", self.build)
        owners = self.net.nodes["n0"].tables.owners(bucket)
        [displaced] = [m for m in old_owners if m not in owners]
        reader, other = [m for m in owners if m != "n4"]
        # A newer version acknowledged by two of the three old owners: the
        # reader missed it, and the other owner that stays does not answer,
        # so the owners' read quorum is the reader and n4, which has
        # nothing yet.
        newer = Version(bucket, "photo", 6000, "v6000", False, 1, "etag-new", "o", {}, [],
                        b"x")
        for member in (other, displaced):
            await self.net.nodes[member].tables.version_table.store.apply(
                version_entry(newer))
        self.net.unreachable.add(other)
        await self.until(lambda: self.net.clusters[reader].previous_ring is not None,
                         "the reader knows data is moving")
        tables = self.net.nodes[reader].tables
        self.assertEqual((await tables.latest(bucket, "photo")).etag, "etag-new")
        self.assertEqual((await tables.version(bucket, "photo", "v6000")).etag, "etag-new")
        items, truncated = await tables.list_heads(bucket, "", "", "", 10)
        self.assertEqual([(i.key, i.etag) for i in items], [("photo", "etag-new")])
        # ... and read repair put it on the owners that answered.
        await self.until(lambda: all(
            self.net.nodes[m].meta.db.read_blocking(lambda c: c.execute(
                "SELECT count(*) FROM versions WHERE bucket=? AND version_id='v6000'",
                (bucket,)).fetchone()[0]) for m in (reader, "n4")),
            "the owners that answered have the newer version")
