"""Tests for z4node.replication.chunks: a chunk placed on its ring owners
by quorum, read back through any node, and a missing, rotted or lying copy
passed over -- on a fake network and clock, then once over real chunk
stores and the real peer channel."""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.fakecluster import FakeNet
from z4node.cluster.ring import Ring, RingMember
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.errors import QuorumNotReached
from z4node.storage.chunks import ChunkCorrupted, ChunkMissing, chunk_hash


class MemoryChunkStore:
    """ChunkStore's put_chunk/get_chunk (and run, inline) in memory; ``lie`` makes get_chunk
    return other bytes than were stored (a peer that cannot be trusted)."""

    def __init__(self):
        self.chunks = {}
        self.lie = False
        self.rotten = set()

    def put_chunk(self, digest, data):
        # As ChunkStore does, a write of a chunk's content replaces a rotted file.
        self.rotten.discard(digest)
        self.chunks[digest] = data
        return defer.succeed(None)

    def has_chunk(self, digest):
        return defer.succeed(digest in self.chunks and digest not in self.rotten)

    def get_chunk(self, digest, then=None):
        if digest in self.rotten:
            return defer.fail(ChunkCorrupted(digest.hex()))
        if digest not in self.chunks:
            return defer.fail(ChunkMissing(digest.hex()))
        data = self.chunks[digest]
        return defer.succeed(b"not " + data if self.lie else data)

    def run(self, fn, *args):
        return defer.succeed(fn(*args))


def build(cluster):
    return ReplicatedChunks(MemoryChunkStore(), cluster)


def run(coroutine):
    return defer.ensureDeferred(coroutine)


class ReplicatedChunkTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNet(5, build)
        self.data = os.urandom(100_000)
        self.digest = chunk_hash(self.data)
        self.owners = self.net.nodes["n0"].owners(self.digest)
        self.outsider = next(m for m in self.net.members if m not in self.owners)

    def holders(self):
        return sorted(m for m, node in self.net.nodes.items()
                      if self.digest in node.store.chunks)

    def test_a_put_through_any_node_lands_on_the_owners_only(self):
        self.successResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)))
        self.assertEqual(self.holders(), sorted(self.owners))
        for member_id in self.net.members:
            got = self.successResultOf(run(self.net.nodes[member_id].get(self.digest)))
            self.assertEqual(got, self.data)

    def test_one_owner_down_still_a_quorum_two_down_not(self):
        self.net.kill(self.owners[2])
        self.successResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)))
        self.assertEqual(self.holders(), sorted(self.owners[:2]))
        self.net.kill(self.owners[1])
        self.failureResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)),
                             QuorumNotReached)
        self.assertEqual(self.net.nodes[self.outsider].counters["quorum_failures"], 1)

    def test_while_data_moves_a_put_needs_a_majority_of_both_owner_sets(self):
        """Garage's layout versions, for chunks: while data moves to the
        current ring, a chunk goes to its owners in both rings and is
        acknowledged once a majority of each holds it; with too few of the
        previous owners left, the put is refused; once the move is over,
        only the owners count."""
        leaving = [m for m in self.net.members if m not in self.owners][:2]
        previous = [self.owners[0]] + leaving
        for cluster in self.net.clusters.values():
            cluster.previous_ring = Ring([RingMember(m) for m in previous])
        writer = self.net.nodes[self.owners[1]]
        self.successResultOf(run(writer.put(self.digest, self.data)))
        self.assertEqual(set(self.holders()), set(self.owners) | set(previous))
        self.assertEqual(writer.counters["puts_while_moving"], 1)
        for member_id in leaving:
            self.net.nodes[member_id].store.chunks.clear()
            self.net.kill(member_id)
        self.failureResultOf(run(writer.put(self.digest, self.data)), QuorumNotReached)
        for cluster in self.net.clusters.values():
            cluster.previous_ring = None
        self.successResultOf(run(writer.put(self.digest, self.data)))

    def test_a_previous_owner_that_drains_is_sent_nothing(self):
        """A node draining (out of the ring) is not sent chunks as a
        previous owner: they would only linger on a node being emptied.
        It still counts in the previous owners' majority, so the others
        must hold the chunk."""
        draining = self.outsider
        previous = [draining] + self.owners[:2]
        for cluster in self.net.clusters.values():
            cluster.previous_ring = Ring([RingMember(m) for m in previous])
        self.net.members[draining].capacity = 0.0
        writer = self.net.nodes[self.owners[0]]
        self.successResultOf(run(writer.put(self.digest, self.data)))
        self.assertEqual(self.holders(), sorted(self.owners))
        self.assertEqual(self.net.nodes[draining].strays, set())
        self.net.kill(self.owners[1])
        self.failureResultOf(run(writer.put(self.digest, self.data)), QuorumNotReached)

    def test_a_read_passes_over_a_missing_rotten_or_lying_copy(self):
        self.successResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)))
        first, second, third = (self.net.nodes[o].store for o in self.owners)
        del first.chunks[self.digest]
        second.lie = True
        reader = self.net.nodes[self.outsider]
        self.assertEqual(self.successResultOf(run(reader.get(self.digest))), self.data)
        self.assertEqual(reader.counters["bad_copies"], 1)
        third.rotten.add(self.digest)
        self.failureResultOf(run(reader.get(self.digest)), ChunkMissing)
        self.assertEqual(reader.counters["missing"], 1)

    def test_an_owner_that_lacked_its_chunk_keeps_the_copy_it_read(self):
        """Read repair for chunks: an owner that was down during the write
        (or whose copy rotted) holds a good copy after reading it; a
        reader that is not an owner keeps nothing."""
        self.net.kill(self.owners[2])
        self.successResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)))
        self.net.revive(self.owners[2])
        self.successResultOf(run(self.net.nodes[self.outsider].get(self.digest)))
        self.assertEqual(self.holders(), sorted(self.owners[:2]))
        late = self.net.nodes[self.owners[2]]
        self.assertEqual(self.successResultOf(run(late.get(self.digest))), self.data)
        self.assertEqual(self.holders(), sorted(self.owners))
        self.assertEqual(late.counters["repaired"], 1)
        rotten = self.net.nodes[self.owners[0]]
        rotten.store.rotten.add(self.digest)
        self.assertEqual(self.successResultOf(run(rotten.get(self.digest))), self.data)
        self.assertEqual(rotten.counters["repaired"], 1)
        self.net.calls.clear()
        self.successResultOf(run(rotten.get(self.digest)))
        self.assertEqual(self.net.calls, [])

    def test_heal_replaces_a_rotten_copy_before_it_returns(self):
        """The scrubber's heal: the good copy is stored when heal fires;
        with no good copy anywhere, ChunkMissing and nothing stored."""
        self.successResultOf(run(self.net.nodes[self.outsider].put(self.digest, self.data)))
        rotten = self.net.nodes[self.owners[0]]
        rotten.store.rotten.add(self.digest)
        self.successResultOf(run(rotten.heal(self.digest)))
        self.assertNotIn(self.digest, rotten.store.rotten)
        self.assertEqual(rotten.store.chunks[self.digest], self.data)
        for owner in self.owners:
            self.net.nodes[owner].store.rotten.add(self.digest)
        self.failureResultOf(run(rotten.heal(self.digest)), ChunkMissing)
        self.assertIn(self.digest, rotten.store.rotten)

    def test_an_owner_refuses_bytes_that_are_not_the_chunk(self):
        owner = self.net.nodes[self.owners[0]]
        reply = run(self.net.clusters[self.outsider].call(
            self.owners[0], "chunk.put", {"hash": self.digest.hex()},
            _pieces(b"something else")))
        self.assertEqual(self.failureResultOf(reply).value.code, "BadDigest")
        self.assertEqual(owner.store.chunks, {})

    def test_a_local_copy_costs_no_call(self):
        owner = self.owners[0]
        self.successResultOf(run(self.net.nodes[owner].put(self.digest, self.data)))
        self.net.calls.clear()
        self.successResultOf(run(self.net.nodes[owner].get(self.digest)))
        self.assertEqual(self.net.calls, [])


async def _pieces(data):
    yield data
