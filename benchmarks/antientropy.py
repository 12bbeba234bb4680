"""What one anti-entropy sync costs: two replicas of a bucket of
``--objects`` versions (real SQLite, in this process; the peer calls go
straight to the other replica's handlers, so network time is left out)
that differ in ``--diverged`` versions written to one of them only; and
two owners of ``--objects`` chunk files (real chunk stores) of which one
lost ``--diverged``.

    python benchmarks/antientropy.py      # from the repository root

Prints two Markdown tables: the sync's wall time, its peer calls and the
bytes they carried (arguments and bodies, both ways; the peer channel's
framing and encryption left out), the tree node hashes and leaves it read
on both sides, the entries or chunks it moved, and the same for two equal
replicas; docs/cluster.md quotes them.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from tests.fakecluster import FakeBody, FakeNet  # noqa: E402
from z4node.cluster.channel import Response  # noqa: E402
from z4node.cluster.ring import bucket_key  # noqa: E402
from z4node.objects.tables import ObjectTables, version_entry  # noqa: E402
from z4node.replication.antientropy import AntiEntropy  # noqa: E402
from z4node.replication.chunk_sync import ChunkSync  # noqa: E402
from z4node.replication.chunk_tree import ChunkTrees  # noqa: E402
from z4node.replication.chunks import ReplicatedChunks  # noqa: E402
from z4node.storage.chunks import ChunkStore, chunk_hash  # noqa: E402
from z4node.storage import merkle  # noqa: E402
from z4node.storage.meta import MetaStore, Version, pack_chunks  # noqa: E402
from z4node.storage.object_records import ObjectRecords  # noqa: E402

BUCKET = "bench"


def fill(c, count):
    """``count`` versions of one-chunk objects, and their trees (in the
    writer's transaction, as many PUTs would leave them)."""
    c.execute("INSERT INTO buckets (name, owner, created, hlc) VALUES (?, 'o', 0, 1)",
              (BUCKET,))
    c.executemany(
        "INSERT INTO versions (bucket, key, hlc, version_id, delete_marker, size, etag,"
        " owner, meta, chunks, inline, stamp) VALUES (?, ?, ?, 'null', 0, 1, 'e', 'o',"
        " '{}', ?, NULL, NULL)",
        [(BUCKET, f"key/{i:07d}".encode(), 1000 + i, pack_chunks([(os.urandom(32), 1)]))
         for i in range(count)])
    merkle.build(c)


class Counted:
    """A version store that counts the tree nodes and leaves it hands out."""

    def __init__(self, store):
        self.store = store
        self.nodes = self.leaves = 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def merkle_nodes(self, partition, nodes):
        self.nodes += len(nodes)
        return await self.store.merkle_nodes(partition, nodes)

    async def merkle_leaves(self, partition, prefixes):
        found = await self.store.merkle_leaves(partition, prefixes)
        self.leaves += len(found)
        return found


class BytesCounted:
    """Counts the bytes of one node's calls: their arguments as JSON, and
    the bodies both ways."""

    def __init__(self, cluster):
        self.bytes = 0
        self._call = cluster.call
        cluster.call = self.call

    async def call(self, member, op, args, body=None):
        self.bytes += len(json.dumps(args))
        response = await self._call(member, op, args,
                                    None if body is None else self._counted(body))
        if response.body is None:
            return response
        return Response(response.result, FakeBody(self._counted(response.body)))

    async def _counted(self, pieces):
        async for piece in pieces:
            self.bytes += len(piece)
            yield piece


async def records(reactor, args, workdir):
    metas = []

    def build(cluster):
        path = os.path.join(workdir, cluster.local.id + ".sqlite3")
        meta = MetaStore(reactor, path)
        meta.start()
        metas.append(meta)
        tables = ObjectTables(ObjectRecords(meta, cluster.net.clock), cluster)
        tables.version_table.store = Counted(tables.version_table.store)
        tables.antientropy = AntiEntropy(cluster.net.clock, random.Random(1), cluster,
                                         [tables.version_table], tables.partitions_held)
        return tables
    try:
        net = FakeNet(2, build)
        started = time.monotonic()
        for meta in metas:
            await meta.db.write(fill, args.objects)
        print(f"filled two replicas of {args.objects} versions in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
        a, b = net.nodes["n0"], net.nodes["n1"]
        counted = BytesCounted(net.clusters["n0"])
        partition = bucket_key(BUCKET)
        rows = []
        for label, diverged in (("equal replicas", 0), (f"{args.diverged} diverged", args.diverged)):
            for i in range(diverged):
                version = Version(BUCKET, f"new/{label}/{i:05d}", 10**9 + i, "null", False, 1,
                                  "e", "o", {}, [], b"x")
                await b.version_table.store.apply(version_entry(version))
            stores = [a.version_table.store, b.version_table.store]
            for store in stores:
                store.nodes = store.leaves = 0
            before = dict(a.antientropy.counters)
            sent = counted.bytes
            started = time.monotonic()
            await a.antientropy.sync(a.version_table, partition, "n1")
            seconds = time.monotonic() - started
            after = a.antientropy.counters
            rows.append((label, seconds, after["calls"] - before["calls"], counted.bytes - sent,
                         sum(s.nodes for s in stores), sum(s.leaves for s in stores),
                         after["pulled"] - before["pulled"] + after["pushed"] - before["pushed"]))
    finally:
        for meta in metas:
            meta.stop()
    print(f"| {args.objects:,} versions a replica | sync time | peer calls | bytes "
          "| tree nodes read | leaves read | entries moved |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, seconds, calls, size, nodes, leaves, moved in rows:
        print(f"| {label} | {seconds * 1000:.0f} ms | {calls} | {size:,} | {nodes} "
              f"| {leaves} | {moved} |")


def write_chunks(roots, count):
    """``count`` small chunk files in each of the stores at ``roots``,
    written straight into their layout (no fsync: this is set-up, not what
    is measured); their hashes."""
    digests = []
    for i in range(count):
        data = i.to_bytes(8, "big") + os.urandom(56)
        digest = chunk_hash(data)
        name = digest.hex()
        for root in roots:
            directory = os.path.join(root, name[0:2], name[2:4])
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        digests.append(digest)
    return digests


class EverythingInUse:
    """The in-use question answered here: every chunk is used. In a cluster
    it costs one call to each other member, 32 bytes a differing chunk."""

    async def in_use(self, hashes):
        return set(hashes)


async def chunk_sets(reactor, args, workdir):
    stores = {}

    def build(cluster):
        store = ChunkStore(reactor, os.path.join(workdir, cluster.local.id))
        store.start()
        stores[cluster.local.id] = store
        trees = ChunkTrees(store, cluster.local.id, lambda: cluster.ring)
        # The real reactor as the clock: copies are throttled to no delay.
        return ChunkSync(reactor, cluster, trees,
                         ReplicatedChunks(store, cluster), EverythingInUse(),
                         rate=float("inf"))
    rows = []
    try:
        net = FakeNet(2, build)
        started = time.monotonic()
        digests = await stores["n0"].run(write_chunks, [s.root for s in stores.values()],
                                         args.objects)
        print(f"filled two owners of {args.objects} chunks in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
        a = net.nodes["n0"]
        counted = BytesCounted(net.clusters["n0"])
        ring = net.clusters["n0"].ring
        cases = (("equal, first pass after a start", 0), ("equal", 0),
                 (f"{args.diverged} diverged", args.diverged))
        for label, diverged in cases:
            for digest in digests[:diverged]:
                await stores["n1"].delete_chunk(digest, float("inf"))
            before, sent = dict(a.counters), counted.bytes
            listed = [node.status()["directories_listed"] for node in net.nodes.values()]
            started = time.monotonic()
            await a.sync(ring, "n1")
            seconds = time.monotonic() - started
            after = a.counters
            listed = sum(node.status()["directories_listed"]
                         for node in net.nodes.values()) - sum(listed)
            rows.append((label, seconds, after["calls"] - before["calls"],
                         counted.bytes - sent, listed,
                         after["hashes_read"] - before["hashes_read"],
                         after["chunks_pushed"] - before["chunks_pushed"]))
    finally:
        for store in stores.values():
            store.stop()
    print(f"\n| {args.objects:,} chunks an owner | sync time | peer calls | bytes "
          "| top directories listed | hashes read | chunks moved |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, seconds, calls, size, listed, read, moved in rows:
        print(f"| {label} | {seconds * 1000:.0f} ms | {calls} | {size:,} | {listed} "
              f"| {read} | {moved} |")


async def main(reactor, args):
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        await records(reactor, args, workdir)
        await chunk_sets(reactor, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{os.cpu_count()} cores; in one process; no network time.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--diverged", type=int, default=100)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
