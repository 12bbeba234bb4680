"""Object records on five fake nodes (z4node.objects.tables over real
SQLite replicas, calls on a FakeNet): any node lists what any node wrote,
paged exactly as one node would; an owner that missed writes and deletes
neither shows what was deleted nor hides what was written, and is repaired
by the reads."""

import os

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.fakecluster import FakeNet
from z4node.objects.tables import ObjectTables
from z4node.storage.meta import MetaStore, Version, VersionTombstone
from z4node.storage.object_records import ObjectRecords

BUCKET = "bkt"


class ObjectTablesTests(TestCase):
    def setUp(self):
        self.hlc = 1000
        self.stores = {}
        self.net = FakeNet(5, self.build)
        self.owners = self.net.nodes["n0"].owners(BUCKET)
        return self.create_bucket_everywhere()

    def build(self, cluster):
        path = os.path.join(os.path.abspath(self.mktemp()), "meta.sqlite3")
        os.makedirs(os.path.dirname(path))
        meta = MetaStore(reactor, path)
        meta.start()
        self.addCleanup(meta.stop)
        self.stores[cluster.local.id] = meta
        return ObjectTables(ObjectRecords(meta, cluster.net.clock), cluster)

    async def create_bucket_everywhere(self):
        for meta in self.stores.values():
            await meta.db.write(lambda c: c.execute(
                "INSERT INTO buckets (name, owner, created, hlc) VALUES (?, 'o', 0, 1)",
                (BUCKET,)))

    def version(self, key, body=b"x", version_id="null", marker=False):
        self.hlc += 1
        return Version(BUCKET, key, self.hlc, version_id, marker, len(body), f"etag-{key}",
                       "o", {}, [], None if marker else body)

    def tombstone(self, version):
        self.hlc += 1
        return VersionTombstone(BUCKET, version.key, version.version_id, version.hlc, self.hlc)

    async def listing(self, through, limit, delimiter=""):
        """Every page of ListObjects through ``through``: keys and common
        prefixes, in order."""
        tables, after, seen = self.net.nodes[through], None, []
        while True:
            items, truncated = await tables.list_heads(BUCKET, "", delimiter, after, limit)
            self.assertLessEqual(len(items), limit)
            names = [i if isinstance(i, str) else i.key for i in items]
            seen.extend(names)
            if not truncated:
                return seen
            after = names[-1]

    async def test_any_node_lists_what_any_node_wrote_page_by_page(self):
        keys = [f"{d}/{i:02d}" for d in "abc" for i in range(7)]
        members = sorted(self.net.members)
        for n, key in enumerate(keys):
            await self.net.nodes[members[n % 5]].write_version(self.version(key))
        for member in members:
            for limit in (1, 4, 50):
                self.assertEqual(await self.listing(member, limit), keys)
            self.assertEqual(await self.listing(member, 2, delimiter="/"), ["a/", "b/", "c/"])
            latest = await self.net.nodes[member].latest(BUCKET, "b/03")
            self.assertEqual(latest.etag, "etag-b/03")

    async def test_a_write_an_owner_holds_newer_of_is_reported_not_taken(self):
        """The coordinator learns from the write itself that an owner holds
        a newer edit of the slot (stamped by a clock ahead): write_version
        answers False, and the stamp to go past is read back."""
        coordinator = next(m for m in sorted(self.net.members) if m not in self.owners)
        tables = self.net.nodes[coordinator]
        older, newer = self.version("k"), self.version("k")
        self.assertTrue(await tables.write_version(newer))
        self.assertFalse(await tables.write_version(older))
        self.assertEqual(await tables.edited(BUCKET, "k", "null"), newer.hlc)
        tombstone = self.tombstone(newer)
        self.assertTrue(await tables.write_version(tombstone))
        self.assertEqual(await tables.edited(BUCKET, "k", "null"), tombstone.stamp)
        self.assertFalse(await tables.write_version(older))

    async def test_an_owner_that_missed_writes_and_deletes_misleads_no_listing(self):
        """The stale owner still has a key deleted by version id (its head
        is the deleted version) and lacks a key written without it; whichever
        two owners answer, the listing is right, and reads repair it."""
        stale = self.owners[0]
        kept, gone, overwritten = (self.version(k) for k in ("kept", "gone", "over"))
        for record in (kept, gone, overwritten):
            await self.net.nodes[stale].write_version(record)
        self.net.kill(stale)
        writer = self.owners[1]
        await self.net.nodes[writer].write_version(self.tombstone(gone))
        newer = self.version("over", b"newer")
        await self.net.nodes[writer].write_version(newer)
        await self.net.nodes[writer].write_version(self.version("new"))
        self.net.revive(stale)
        for member in sorted(self.net.members):
            self.assertEqual(await self.listing(member, 2), ["kept", "new", "over"])
            over = await self.net.nodes[member].latest(BUCKET, "over")
            self.assertEqual(over.size, len(b"newer"))
            self.assertIsNone(await self.net.nodes[member].latest(BUCKET, "gone"))
        # Read repair (in the background) brings the stale owner up to
        # date: alone, it then agrees.
        records = self.net.nodes[stale]._records
        for _ in range(300):
            local, _ = await records.list_heads(BUCKET, "", "", None, 10)
            if [i.key for i in local] == ["kept", "new", "over"]:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([(i.key, i.size) for i in local],
                         [("kept", 1), ("new", 1), ("over", len(b"newer"))])

    async def test_peers_answer_with_digests_and_a_newer_one_is_read_whole(self):
        """Read through an owner, the other owners answer without the inline
        body (their digest) and the body comes from this node's copy; an
        owner that missed the newest write still returns it whole, read a
        second time, and is repaired."""
        stale = self.owners[0]
        first = self.version("k", b"first body")
        await self.net.nodes[self.owners[1]].write_version(first)
        for owner in self.owners:
            self.net.calls.clear()
            got = await self.net.nodes[owner].latest(BUCKET, "k")
            self.assertEqual((got.hlc, got.inline), (first.hlc, b"first body"))
            self.assertEqual([op for _, _, op in self.net.calls], ["objects.latest"])
        self.net.unreachable.add(stale)
        second = self.version("k", b"second body")
        await self.net.nodes[self.owners[1]].write_version(second)
        self.net.unreachable.discard(stale)
        self.net.calls.clear()
        got = await self.net.nodes[stale].latest(BUCKET, "k")
        self.assertEqual((got.hlc, got.inline), (second.hlc, b"second body"))
        self.assertEqual([op for _, _, op in self.net.calls if op == "objects.latest"],
                         ["objects.latest"] * 2)
        records = self.net.nodes[stale]._records
        for _ in range(300):
            local, _ = await records.latest(BUCKET, "k")
            if local.hlc == second.hlc:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(local.inline, b"second body")
