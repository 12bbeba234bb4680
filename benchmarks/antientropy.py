"""What one anti-entropy sync costs: two replicas of a bucket of
``--objects`` versions (real SQLite, in this process; the peer calls go
straight to the other replica's handlers, so network time is left out)
that differ in ``--diverged`` versions written to one of them only.

    python benchmarks/antientropy.py      # from the repository root

Prints a Markdown table: the sync's wall time, its peer calls, the tree
node hashes and leaves it read on both sides, the entries it moved, and
the same for two equal replicas; docs/cluster.md quotes it.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from tests.fakecluster import FakeNet  # noqa: E402
from z4node.cluster.ring import bucket_key  # noqa: E402
from z4node.objects.tables import ObjectTables, version_entry  # noqa: E402
from z4node.replication.antientropy import AntiEntropy  # noqa: E402
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


async def main(reactor, args):
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
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
            started = time.monotonic()
            await a.antientropy.sync(a.version_table, partition, "n1")
            seconds = time.monotonic() - started
            after = a.antientropy.counters
            rows.append((label, seconds, after["calls"] - before["calls"],
                         sum(s.nodes for s in stores), sum(s.leaves for s in stores),
                         after["pulled"] - before["pulled"] + after["pushed"] - before["pushed"]))
    finally:
        for meta in metas:
            meta.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"| {args.objects:,} versions a replica | sync time | peer calls | tree nodes read "
          "| leaves read | entries moved |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, seconds, calls, nodes, leaves, moved in rows:
        print(f"| {label} | {seconds * 1000:.0f} ms | {calls} | {nodes} | {leaves} | {moved} |")
    print(f"\n{os.cpu_count()} cores; SQLite in one process; no network time.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--diverged", type=int, default=100)
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
