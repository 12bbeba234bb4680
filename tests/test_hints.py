"""Hinted handoff (z4node.replication.hints) on five fake nodes with a fake
clock and real SQLite hint queues: every transition of a hint, from an
owner down during writes to the hint gone after delivery; a holder that
dies, a holder that restarts, a delivery interrupted and resumed, the
window, and a read that finds a chunk only through the DHT."""

import os
from types import SimpleNamespace

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from tests.test_replicated_chunks import MemoryChunkStore
from tests.test_table import MemoryStore, ObjectSchema, entry
from z4node.cluster.members import State
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.errors import QuorumNotReached
from z4node.replication.hints import HintedHandoff
from z4node.replication.table import PartitionedTable
from z4node.storage.chunks import chunk_hash
from z4node.storage.hint_store import HintStore
from z4node.storage.meta import MetaStore

PARTITION = b"photos"


class Chunks(MemoryChunkStore):
    """What hand-off uses of a ChunkStore, in memory."""

    def __init__(self):
        super().__init__()
        self.pins = {}
        self.puts = 0

    def put_chunk(self, digest, data):
        self.puts += 1
        return super().put_chunk(digest, data)

    def pin(self, digest):
        self.pins[digest] = self.pins.get(digest, 0) + 1

    def unpin(self, digest):
        self.pins[digest] -= 1
        if not self.pins[digest]:
            del self.pins[digest]

    def is_pinned(self, digest):
        return digest in self.pins

    def delete_chunk(self, digest, untouched_since):
        data = self.chunks.pop(digest, None)
        return defer.succeed(None if data is None else len(data))


class HintedHandoffTests(TestCase):
    def setUp(self):
        self.paths = {}
        self.net = FakeNet(5, self.build)
        self.clock = self.net.clock
        self.data = os.urandom(50_000)
        self.digest = chunk_hash(self.data)

    def build(self, cluster, path=None):
        member = cluster.local.id
        if path is None:
            path = os.path.join(os.path.abspath(self.mktemp()), "meta.sqlite3")
            os.makedirs(os.path.dirname(path))
        self.paths[member] = path
        meta = MetaStore(reactor, path)
        meta.start()
        self.addCleanup(meta.stop)
        chunks = Chunks()
        handoff = HintedHandoff(cluster.net.clock, cluster, HintStore(meta), chunks)
        handoff.startService()
        self.addCleanup(handoff.stopService)
        return SimpleNamespace(
            meta=meta, chunks=chunks, handoff=handoff,
            manager=ReplicatedChunks(chunks, cluster, handoff),
            table=PartitionedTable("objects", ObjectSchema(), MemoryStore(), cluster, handoff))

    async def until(self, condition, what):
        """Run the fake clock (and let SQLite answer) until ``condition()``."""
        for _ in range(400):
            if condition():
                return
            self.clock.advance(0.5)
            await deferLater(reactor, 0.005, lambda: None)
        self.fail(f"never happened: {what}")

    def node(self, member):
        return self.net.nodes[member]

    def queued(self, member):
        return sum(q["count"] for q in self.node(member).handoff.queues.values())

    def total_queued(self):
        return sum(self.queued(m) for m in self.net.members)

    def coordinator(self, owners):
        return next(m for m in sorted(self.net.members) if m not in owners)

    async def write_with_owner_down(self):
        """Kill one owner of the chunk, put the chunk and an entry; the
        target, its owners, and who holds the chunk's hint."""
        owners = self.node("n0").manager.owners(self.digest)
        target = owners[1]
        self.net.kill(target)
        coordinator = self.coordinator(owners)
        await self.node(coordinator).manager.put(self.digest, self.data)
        await self.node(coordinator).table.write(entry("cat.jpg", 7, "v7"))
        holder = self.node(coordinator).handoff.holder(self.digest, owners, target)
        return target, owners, holder

    async def test_an_owner_down_gets_hints_that_are_delivered_when_it_is_back(self):
        target, owners, holder = await self.write_with_owner_down()
        # The holder is the first live node after the owners, not an owner.
        self.assertNotIn(holder, owners)
        await self.until(lambda: self.queued(holder) >= 1, "the chunk hint is held")
        self.assertIn(self.digest, self.node(holder).chunks.chunks)
        self.assertEqual(self.net.providers[self.digest.hex()], {holder})
        self.assertNotIn(self.digest, self.node(target).chunks.chunks)
        entry_owners = self.node("n0").table.owners(PARTITION)
        if target in entry_owners:
            await self.until(lambda: self.total_queued() >= 2,
                             "the entry hint is held")

        self.net.revive(target)
        await self.until(lambda: self.total_queued() == 0,
                         "every hint delivered")
        self.assertEqual(self.node(target).chunks.chunks[self.digest], self.data)
        if target in entry_owners:
            self.assertEqual(self.node(target).table.store.entries[(PARTITION, "cat.jpg")]
                             ["value"], "v7")
        # The holder's copy was only for the hint: gone, and no longer offered.
        self.assertNotIn(self.digest, self.node(holder).chunks.chunks)
        self.assertEqual(self.net.providers[self.digest.hex()], set())
        for member in self.net.members:
            self.assertEqual(await self.node(member).handoff._hints.queues(), {})

    async def test_hints_never_count_toward_the_write_quorum(self):
        owners = self.node("n0").manager.owners(self.digest)
        for owner in owners[1:]:
            self.net.kill(owner)
        coordinator = self.coordinator(owners)
        with self.assertRaises(QuorumNotReached):
            await self.node(coordinator).manager.put(self.digest, self.data)
        # Both missing owners still get their hints.
        await self.until(lambda: self.total_queued() == 2,
                         "a hint for each owner that was down")

    async def test_the_periodic_run_delivers_without_a_membership_event(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        # Back, but the event that says so was missed (riak_core #715).
        self.net.members[target].state = State.ALIVE
        await self.until(lambda: self.digest in self.node(target).chunks.chunks,
                         "the periodic run delivered the chunk")

    async def test_a_holder_that_restarts_still_delivers(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        old = self.node(holder)
        old.handoff.stopService()
        old.meta.stop()
        self.net.kill(holder)
        cluster = self.net.clusters[holder]
        cluster.subscribers.clear()
        self.net.nodes[holder] = self.build(cluster, self.paths[holder])
        self.net.nodes[holder].chunks.chunks = old.chunks.chunks  # the disk survived
        self.net.revive(holder)
        self.net.revive(target)
        await self.until(lambda: self.digest in self.node(target).chunks.chunks,
                         "the restarted holder delivered the chunk")

    async def test_a_dead_holder_delivers_once_it_is_back(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        self.net.kill(holder)
        self.net.revive(target)
        for _ in range(30):
            self.clock.advance(HintedHandoff.interval)
            await deferLater(reactor, 0.005, lambda: None)
        self.assertNotIn(self.digest, self.node(target).chunks.chunks)
        # The write is still readable from its two owners meanwhile.
        self.assertEqual(await self.node(target).manager.get(self.digest), self.data)
        self.node(target).chunks.chunks.pop(self.digest, None)  # as if never repaired
        self.net.revive(holder)
        await self.until(lambda: self.digest in self.node(target).chunks.chunks,
                         "the holder delivered after coming back")

    async def test_an_interrupted_delivery_resumes_without_sending_twice(self):
        owners = self.node("n0").manager.owners(self.digest)
        target = owners[1]
        self.net.kill(target)
        coordinator = self.coordinator(owners)
        chunks = [os.urandom(10_000) for _ in range(6)]
        digests = []
        for data in chunks:
            digest = chunk_hash(data)
            digests.append(digest)
            # Every chunk is placed as if it had the first chunk's owners.
            self.node(coordinator).handoff.hand_off_chunk(target, owners, digest, data)
        # Each chunk's hint is held by the node after its own owners.
        await self.until(lambda: self.total_queued() == 6, "six hints held")
        # The target comes back but stops answering after two chunks.
        target_chunks = self.node(target).chunks
        real_put = target_chunks.put_chunk

        def put_then_vanish(digest, data):
            if target_chunks.puts == 1:
                self.net.unreachable.add(target)
            return real_put(digest, data)
        target_chunks.put_chunk = put_then_vanish
        self.net.revive(target)
        await self.until(lambda: self.total_queued() == 4, "two delivered, four left")
        self.net.unreachable.discard(target)
        target_chunks.put_chunk = real_put
        await self.until(lambda: self.total_queued() == 0, "the rest delivered")
        self.assertEqual(sorted(target_chunks.chunks), sorted(digests))
        self.assertEqual(target_chunks.puts, 6)

    async def test_a_chunk_the_owner_has_costs_a_check_not_a_transfer(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        self.node(target).chunks.chunks[self.digest] = self.data
        puts = self.node(target).chunks.puts
        self.net.revive(target)
        await self.until(lambda: self.queued(holder) == 0, "the hint dropped")
        self.assertEqual(self.node(target).chunks.puts, puts)
        self.assertEqual(self.node(holder).handoff.counters["already_there"], 1)

    async def test_hints_past_the_window_are_dropped(self):
        target, owners, holder = await self.write_with_owner_down()
        # The chunk's hint, and the entry's if the target owns the partition.
        hints = 2 if target in self.node("n0").table.owners(PARTITION) else 1
        await self.until(lambda: self.total_queued() == hints, "the hints are held")
        self.clock.advance(HintedHandoff.window + 1)
        await self.until(lambda: self.total_queued() == 0, "the hints expired")
        expired = sum(self.node(m).handoff.counters["expired"] for m in self.net.members)
        self.assertEqual(expired, hints)
        self.assertNotIn(self.digest, self.node(holder).chunks.chunks)
        self.net.revive(target)
        for _ in range(5):
            self.clock.advance(HintedHandoff.interval)
            await deferLater(reactor, 0.005, lambda: None)
        self.assertNotIn(self.digest, self.node(target).chunks.chunks)

    async def test_a_chunk_only_a_hint_holder_has_is_read_through_the_dht(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        for owner in owners:
            self.node(owner).chunks.chunks.pop(self.digest, None)
        reader = next(m for m in sorted(self.net.members)
                      if m not in owners and m != holder)
        self.assertEqual(await self.node(reader).manager.get(self.digest), self.data)
        self.assertEqual(self.node(reader).manager.counters["found_through_dht"], 1)
        # ... and the copy went on to the owners that are up.
        live = [m for m in owners if m != target]
        await self.until(lambda: all(self.digest in self.node(m).chunks.chunks for m in live),
                         "the live owners got the chunk back")

    async def test_status_shows_each_queue(self):
        target, owners, holder = await self.write_with_owner_down()
        await self.until(lambda: self.queued(holder) >= 1, "the hint is held")
        self.clock.advance(30)
        status = self.node(holder).handoff.status()
        queue = status["queues"][target]
        self.assertGreaterEqual(queue["count"], 1)
        self.assertGreaterEqual(queue["bytes"], len(self.data))
        self.assertGreaterEqual(queue["oldest_age"], 30)
