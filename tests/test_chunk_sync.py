"""Anti-entropy of chunk sets (z4node.replication.chunk_sync over
z4node.replication.chunk_tree) on five fake nodes with real chunk stores,
real SQLite records and a fake clock: chunk copies an owner lost come back
after one pass, with tree calls that do not grow with the chunk set and
transfers that grow with the difference; garbage is left to the
collector; nothing is compared while data moves; the trees kept on every
change equal trees computed from scratch."""

import os
import random

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.test_cluster_gc import GcNodes
from z4node.cluster.ring import Ring, RingMember
from z4node.replication.chunk_sync import ChunkSync
from z4node.replication.chunk_tree import ChunkTrees
from z4node.storage import merkle
from z4node.storage.chunks import ChunkCorrupted

TREE_OPS = ("ae.chunks.nodes", "ae.chunks.leaves")


class SyncNodes(GcNodes):
    """GcNodes with chunk-set trees and a ChunkSync on each node; the
    ring data is placed for is the ring in use unless ``moving``."""

    moving = False

    def build(self, cluster):
        node = GcNodes.build(self, cluster)
        node.trees = ChunkTrees(node.store, cluster.local.id,
                                lambda: None if self.moving else cluster.ring)
        node.sync = ChunkSync(cluster.net.clock, cluster, node.trees, node.chunks,
                              node.references)
        return node

    async def settle(self, d):
        """Wait for ``d``, moving the fake clock on (copies are throttled)."""
        while not d.called:
            self.clock.advance(1)
            await deferLater(reactor, 0.001, lambda: None)
        return await d

    def run_pass(self, member):
        """Sync ``member`` with every other live member, as an anti-entropy
        pass does (AntiEntropy.run_pass); the chunks copied."""
        sync = self.net.nodes[member].sync

        async def every_peer():
            ring, peers = sync.peers()
            return sum([await sync.sync_with(ring, peer) for peer in peers])
        return self.settle(Deferred.fromCoroutine(every_peer()))

    def sync(self, member, peer):
        node = self.net.nodes[member]
        return self.settle(Deferred.fromCoroutine(
            node.sync.sync(self.net.clusters[member].ring, peer)))


def content(i):
    return random.Random(i).randbytes(3000 + i)


class ChunkSyncTests(TestCase):
    def setUp(self):
        self.cluster = SyncNodes(os.path.abspath(self.mktemp()))
        self.addCleanup(self.cluster.close)

    async def put_many(self, count, start=0):
        c = self.cluster
        return [await c.put(f"n{i % 5}", f"k{i}", content(i)) for i in range(start,
                                                                            start + count)]

    async def lose(self, member, digest):
        freed = await self.cluster.net.nodes[member].store.delete_chunk(digest, float("inf"))
        self.assertIsNotNone(freed, f"{member} held no copy of {digest.hex()}")

    def tree_calls(self):
        return sum(1 for _, _, op in self.cluster.net.calls if op in TREE_OPS)

    async def test_copies_an_owner_lost_come_back_after_one_pass(self):
        c = self.cluster
        versions = await self.put_many(40)
        digests = [v.chunks[0][0] for v in versions]
        # A first pass computes the trees (nothing differs); the losses
        # after it reach them through the store.
        for member in c.net.members:
            self.assertEqual(await c.run_pass(member), 0)
        lost = [d for d in digests if "n2" in c.owners(d)][:6]
        for digest in lost:
            await self.lose("n2", digest)
        self.assertEqual(await c.run_pass("n2"), len(lost))
        for digest in digests:
            self.assertEqual(c.holders(digest), c.owners(digest), digest.hex())
        self.assertEqual(c.net.nodes["n2"].sync.counters["chunks_pulled"], len(lost))
        # A pass on the other side finds nothing left to do.
        for member in c.net.members:
            self.assertEqual(await c.run_pass(member), 0)

    async def test_a_pass_on_the_node_that_has_the_copy_sends_it(self):
        c = self.cluster
        [version] = await self.put_many(1)
        digest = version.chunks[0][0]
        loser, keeper = sorted(c.owners(digest))[:2]
        await self.lose(loser, digest)
        self.assertEqual(await c.run_pass(keeper), 1)
        self.assertEqual(c.holders(digest), c.owners(digest))
        self.assertEqual(c.net.nodes[keeper].sync.counters["chunks_pushed"], 1)

    async def cost(self, chunks, lost):
        """Tree calls, hashes read and chunks copied for one sync of n0 with
        n1, when n0 lost ``lost`` of the chunks they share, among
        ``chunks``."""
        c = self.cluster
        digests = [v.chunks[0][0] for v in await self.put_many(chunks)]
        shared = [d for d in digests if {"n0", "n1"} <= c.owners(d)]
        for digest in shared[:lost]:
            await self.lose("n0", digest)
        calls = self.tree_calls()
        await c.sync("n0", "n1")
        for digest in digests:
            self.assertEqual(c.holders(digest), c.owners(digest), digest.hex())
        counters = c.net.nodes["n0"].sync.counters
        return self.tree_calls() - calls, counters["hashes_read"], counters["chunks_pulled"]

    async def test_a_sync_costs_calls_in_proportion_to_the_difference(self):
        # The root and three levels of children, then one call for the
        # hashes in the differing leaf buckets (the lost chunks, and the
        # rare one sharing a bucket with one); each copy is a call more.
        for chunks, lost in [(60, 1), (200, 1), (200, 12)]:
            self.setUp()
            calls, read, pulled = await self.cost(chunks, lost)
            self.assertEqual((calls, pulled), (merkle.DEPTH + 2, lost))
            self.assertTrue(lost <= read <= lost + 2, (chunks, lost, read))

    async def test_equal_chunk_sets_cost_one_call(self):
        c = self.cluster
        await self.put_many(30)
        calls = self.tree_calls()
        await c.sync("n3", "n4")
        self.assertEqual(self.tree_calls() - calls, 1)

    async def test_a_chunk_no_version_uses_is_left_to_the_collector(self):
        c = self.cluster
        versions = await self.put_many(5)
        for i, version in enumerate(versions):
            await c.delete(f"n{i}", version)
        digest = versions[0].chunks[0][0]
        loser = sorted(c.owners(digest))[0]
        await self.lose(loser, digest)
        for member in c.net.members:
            self.assertEqual(await c.run_pass(member), 0)
        self.assertNotIn(loser, c.holders(digest))
        self.assertTrue(any(node.sync.counters["garbage_left"]
                            for node in c.net.nodes.values()))

    async def test_while_a_member_is_down_every_differing_chunk_is_copied(self):
        c = self.cluster
        [version] = await self.put_many(1)
        digest = version.chunks[0][0]
        await c.delete("n0", version)
        owners = sorted(c.owners(digest))
        bystander = next(m for m in c.net.members if m not in owners)
        await self.lose(owners[0], digest)
        c.net.kill(bystander)
        # Whether the chunk is garbage is unknown: a copy too many is
        # collected later, a copy too few would be a loss.
        self.assertEqual(await c.run_pass(owners[1]), 1)
        self.assertIn(owners[0], c.holders(digest))

    async def test_nothing_is_compared_while_data_moves(self):
        c = self.cluster
        [version] = await self.put_many(1)
        digest = version.chunks[0][0]
        owners = sorted(c.owners(digest))
        await self.lose(owners[0], digest)
        c.moving = True
        calls = len(c.net.calls)
        self.assertEqual(await c.run_pass(owners[0]), 0)
        self.assertEqual(len(c.net.calls), calls)
        self.assertEqual(c.net.nodes[owners[0]].sync.counters["skipped"], 1)
        c.moving = False
        self.assertEqual(await c.run_pass(owners[0]), 1)

    async def test_a_peer_placing_data_for_another_ring_is_skipped(self):
        c = self.cluster
        [version] = await self.put_many(1)
        digest = version.chunks[0][0]
        owners = sorted(c.owners(digest))
        await self.lose(owners[0], digest)
        # The peers' trees are for a ring without n4; this node's is not.
        smaller = Ring([RingMember(m) for m in c.net.members if m != "n4"])
        for member in c.net.members:
            if member != owners[0]:
                c.net.nodes[member].trees.placed_ring = lambda: smaller
        self.assertEqual(await c.run_pass(owners[0]), 0)
        self.assertEqual(c.net.nodes[owners[0]].sync.counters["sync_failures"], 0)
        self.assertNotIn(owners[0], c.holders(digest))

    async def test_trees_kept_on_every_change_equal_trees_computed_afresh(self):
        c = self.cluster
        versions = await self.put_many(50)
        node = c.net.nodes["n1"]
        ring = c.net.clusters["n1"].ring
        nodes = [merkle.ROOT] + merkle.children(merkle.ROOT)
        before = {peer: await node.trees.node_hashes(ring, peer, nodes)
                  for peer in ("n0", "n2", "n3", "n4")}
        # Changes after the trees were computed: new chunks, lost ones, a
        # copy set aside as corrupted by a read.
        await self.put_many(20, start=50)
        for version in versions[:5]:
            if "n1" in c.owners(version.chunks[0][0]):
                await self.lose("n1", version.chunks[0][0])
        damaged = next(v.chunks[0][0] for v in versions[5:]
                       if "n1" in c.owners(v.chunks[0][0]))
        with open(node.store.path(damaged), "r+b") as f:
            f.write(b"rot")
        with self.assertRaises(ChunkCorrupted):
            await node.store.get_chunk(damaged)
        listed = node.trees.counters["directories_listed"]
        fresh = ChunkTrees(node.store, "n1", lambda: ring)
        node.store.on_change = node.trees.changed
        for peer in ("n0", "n2", "n3", "n4"):
            kept = await node.trees.node_hashes(ring, peer, nodes)
            self.assertEqual(kept, await fresh.node_hashes(ring, peer, nodes), peer)
            self.assertNotEqual(kept, before[peer], peer)
        # The kept trees followed each change without listing a directory.
        self.assertEqual(node.trees.counters["directories_listed"], listed)
