"""Garbage collection across a cluster (z4node.storage.gc asking
z4node.replication.references) on five fake nodes with real chunk stores,
real SQLite records and a fake clock.

Versions live on their bucket's owners and chunks on theirs, so a chunk's
owner rarely holds a version that uses it. These tests show that a chunk
no version anywhere uses goes from every node, that one a version uses
stays on all its owners, and that nothing is deleted while the answer is
unknown (a member down) or while something else still needs the chunk (an
upload in progress elsewhere, a hinted entry). A hypothesis state machine
drives uploads, deletes, shared content and collections in any order and
checks after every step that no live version lost a chunk.
"""

import os
import shutil
import tempfile
import time
from types import SimpleNamespace

from hypothesis import settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from z4node import hlc as hlclib
from z4node.objects.tables import ObjectTables
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.references import ChunkReferences
from z4node.storage.chunks import ChunkStore, chunk_hash
from z4node.storage.gc import GarbageCollector
from z4node.storage.hint_store import HintStore
from z4node.storage.meta import MetaStore, Version, VersionTombstone
from z4node.storage.object_records import ObjectRecords

NODES = 5
GRACE = 60.0


class GcNodes:
    """Five fake nodes (each: metadata, chunk store, object tables,
    replicated chunks, chunk references, a garbage collector) in ``base``;
    ``close()`` stops their stores."""

    def __init__(self, base):
        self.base = base
        self._closers = []
        self.net = FakeNet(NODES, self.build)
        self.clock = self.net.clock
        # File times are real: the fake clock starts at the real time.
        self.clock.advance(time.time() - self.clock.seconds())
        self._hlc = 0

    def build(self, cluster):
        directory = os.path.join(self.base, cluster.local.id)
        os.makedirs(directory)
        meta = MetaStore(reactor, os.path.join(directory, "meta.sqlite3"))
        meta.start()
        self._closers.append(meta.stop)
        meta.db.write_blocking(lambda c: c.execute(
            "INSERT INTO buckets (name, owner, created, hlc) VALUES ('data', 'o', 0, 1)"))
        store = ChunkStore(reactor, os.path.join(directory, "chunks"))
        store.start()
        self._closers.append(store.stop)
        records = ObjectRecords(meta, cluster.net.clock)
        hints = HintStore(meta)
        references = ChunkReferences(cluster, meta, store, hints)
        gc = GarbageCollector(cluster.net.clock, meta, store)
        gc.chunk_grace_seconds = GRACE
        gc.in_use = references.in_use
        return SimpleNamespace(meta=meta, store=store, tables=ObjectTables(records, cluster),
                               chunks=ReplicatedChunks(store, cluster), hints=hints,
                               references=references, gc=gc)

    def close(self):
        for close in reversed(self._closers):
            close()

    def next_hlc(self):
        self._hlc += 1
        return hlclib.from_seconds(self.clock.seconds()) + self._hlc

    async def put(self, via, key, data):
        """Write a one-chunk object through node ``via``, as the object
        layer does: the chunk pinned until its version is written."""
        node = self.net.nodes[via]
        digest = chunk_hash(data)
        node.store.pin(digest)
        try:
            await self.put_chunk(node, digest, data)
            hlc = self.next_hlc()
            version = Version("data", key, hlc, f"v{hlc}", False, len(data), "etag", "o", {},
                              [(digest, len(data))], None)
            await node.tables.write_version(version)
        finally:
            node.store.unpin(digest)
        return version

    async def put_chunk(self, node, digest, data):
        """Put a chunk through ``node`` and wait for the third owner's copy
        too (the put returns once two have theirs)."""
        await node.chunks.put(digest, data)
        for _ in range(1000):
            if self.owners(digest) <= self.holders(digest):
                return
            await deferLater(reactor, 0.005, lambda: None)
        raise AssertionError(f"chunk {digest.hex()} never reached all its owners")

    async def delete(self, via, version):
        await self.net.nodes[via].tables.write_version(VersionTombstone(
            "data", version.key, version.version_id, version.hlc, self.next_hlc()))

    async def collect(self, members=None):
        """One GC pass on every live node (or on ``members``), past the grace."""
        self.clock.advance(2 * GRACE)
        for member in members or self.live():
            await self.net.nodes[member].gc.collect()

    def live(self):
        return [m for m, member in self.net.members.items() if member.state.value == "alive"]

    def holders(self, digest):
        return {m for m, node in self.net.nodes.items()
                if os.path.exists(node.store.path(digest))}

    def owners(self, digest):
        return set(self.net.clusters["n0"].owners(digest))

    def chunk_files(self):
        return sum(len(files) for node in self.net.nodes.values()
                   for _, _, files in os.walk(node.store.root))


class ClusterGarbageCollectionTests(TestCase):
    def setUp(self):
        self.cluster = GcNodes(os.path.abspath(self.mktemp()))
        self.addCleanup(self.cluster.close)

    async def test_unused_chunks_go_from_every_node_and_used_ones_stay_on_their_owners(self):
        c = self.cluster
        versions = [await c.put(f"n{i % NODES}", f"k{i}", os.urandom(6000))
                    for i in range(30)]
        # Two keys share one content: deleting one keeps the chunk.
        shared = os.urandom(6000)
        first = await c.put("n1", "shared-1", shared)
        await c.put("n3", "shared-2", shared)
        for i, version in enumerate(versions[:10]):
            await c.delete(f"n{(i + 2) % NODES}", version)
        await c.delete("n0", first)
        await c.collect()
        for version in versions[:10]:
            [(digest, _)] = version.chunks
            self.assertEqual(c.holders(digest), set(), version.key)
        live = [v.chunks[0][0] for v in versions[10:]] + [chunk_hash(shared)]
        for digest in live:
            self.assertEqual(c.holders(digest), c.owners(digest))
        self.assertEqual(c.chunk_files(), 3 * len(live))
        deleted = sum(node.gc.counters["chunks_deleted"] for node in c.net.nodes.values())
        self.assertEqual(deleted, 3 * 10)
        freed = sum(node.gc.counters["bytes_freed"] for node in c.net.nodes.values())
        self.assertEqual(freed, 3 * 10 * 6000)

    async def test_nothing_is_deleted_while_a_member_is_down(self):
        c = self.cluster
        versions = [await c.put("n0", f"k{i}", os.urandom(5000)) for i in range(10)]
        for version in versions:
            await c.delete("n1", version)
        c.net.kill("n4")
        await c.collect()
        for version in versions:
            digest = version.chunks[0][0]
            self.assertEqual(c.holders(digest), c.owners(digest))
        self.assertTrue(any(node.references.counters["undecided"]
                            for node in c.net.nodes.values()))
        c.net.revive("n4")
        await c.collect()
        for version in versions:
            self.assertEqual(c.holders(version.chunks[0][0]), set())

    async def test_nothing_is_deleted_while_a_live_member_does_not_answer(self):
        c = self.cluster
        versions = [await c.put("n0", f"k{i}", os.urandom(5000)) for i in range(5)]
        for version in versions:
            await c.delete("n1", version)
        c.net.unreachable.add("n3")
        await c.collect([m for m in c.live() if m != "n3"])
        for version in versions:
            digest = version.chunks[0][0]
            self.assertEqual(c.holders(digest), c.owners(digest))
        c.net.unreachable.clear()
        await c.collect()
        for version in versions:
            self.assertEqual(c.holders(version.chunks[0][0]), set())

    async def test_a_chunk_pinned_by_an_upload_on_another_node_stays(self):
        c = self.cluster
        data = os.urandom(7000)
        digest = chunk_hash(data)
        coordinator = next(m for m in sorted(c.net.nodes) if m not in c.owners(digest))
        node = c.net.nodes[coordinator]
        # An upload in progress on the coordinator: the chunk is stored on
        # its owners, its version not written yet.
        node.store.pin(digest)
        await c.put_chunk(node, digest, data)
        await c.collect()
        self.assertEqual(c.holders(digest), c.owners(digest))
        node.store.unpin(digest)
        await c.collect()
        self.assertEqual(c.holders(digest), set())

    async def test_a_node_holding_a_hinted_entry_keeps_every_chunk(self):
        c = self.cluster
        version = await c.put("n2", "k", os.urandom(5000))
        await c.delete("n2", version)
        holder = c.net.nodes["n0"]
        await holder.hints.add_entry("n1", "versions", {"bucket": "data"}, c.clock.seconds())
        await c.collect()
        digest = version.chunks[0][0]
        self.assertEqual(c.holders(digest), c.owners(digest))
        [hint] = await holder.hints.batch("n1", 0, 10)
        await holder.hints.remove([hint.id])
        await c.collect()
        self.assertEqual(c.holders(digest), set())

    async def test_a_node_that_is_asked_for_too_many_hashes_refuses(self):
        c = self.cluster
        hashes = [os.urandom(32) for _ in range(ChunkReferences.max_hashes + 1)]
        asking = c.net.clusters["n0"]
        with self.assertRaises(Exception) as raised:
            await asking.call("n1", "chunk.referenced", {}, b"".join(hashes))
        self.assertIn("TooLarge", str(raised.exception))



class ConcurrentUploadsAndDeletes(RuleBasedStateMachine):
    """Uploads (some still in progress), deletes and GC passes on any node,
    in any order, with contents shared between keys: no live version, and
    no upload in progress, ever loses a chunk on any of its owners."""

    contents = [os.urandom(4500 + i) for i in range(6)]

    def __init__(self):
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="z4-gc-machine-")
        self.cluster = GcNodes(self.base)
        self.live = {}  # key -> Version
        self.uploading = []  # (node, digest) of uploads in progress

    def run(self, coroutine_function, *args):
        return blockingCallFromThread(
            reactor, lambda: Deferred.fromCoroutine(coroutine_function(*args)))

    @rule(key=st.sampled_from(["a", "b", "c", "d"]), content=st.integers(0, 5),
          via=st.integers(0, NODES - 1))
    def upload(self, key, content, via):
        if key in self.live:
            self.run(self.cluster.delete, f"n{via}", self.live.pop(key))
        self.live[key] = self.run(self.cluster.put, f"n{via}", key, self.contents[content])

    @rule(content=st.integers(0, 5), via=st.integers(0, NODES - 1))
    def begin_upload(self, content, via):
        node = self.cluster.net.nodes[f"n{via}"]
        data = self.contents[content]
        digest = chunk_hash(data)
        node.store.pin(digest)
        self.uploading.append((node, digest))
        self.run(self.cluster.put_chunk, node, digest, data)

    @precondition(lambda self: self.uploading)
    @rule()
    def end_upload(self):
        node, digest = self.uploading.pop(0)
        node.store.unpin(digest)

    @precondition(lambda self: self.live)
    @rule(via=st.integers(0, NODES - 1), data=st.data())
    def delete(self, via, data):
        key = data.draw(st.sampled_from(sorted(self.live)))
        self.run(self.cluster.delete, f"n{via}", self.live.pop(key))

    @rule(member=st.integers(0, NODES - 1))
    def collect(self, member):
        self.run(self.cluster.collect, [f"n{member}"])

    @invariant()
    def no_chunk_in_use_is_lost(self):
        needed = {v.chunks[0][0] for v in self.live.values()}
        needed |= {digest for _, digest in self.uploading}
        for digest in needed:
            missing = self.cluster.owners(digest) - self.cluster.holders(digest)
            assert not missing, f"chunk {digest.hex()} lost on {sorted(missing)}"

    def teardown(self):
        self.cluster.close()
        shutil.rmtree(self.base, ignore_errors=True)


class ConcurrentUploadsAndDeletesTests(TestCase):
    timeout = 600

    def test_gc_never_deletes_a_chunk_in_use(self):
        return threads.deferToThread(
            run_state_machine_as_test, ConcurrentUploadsAndDeletes,
            settings=settings(max_examples=25, stateful_step_count=25))
