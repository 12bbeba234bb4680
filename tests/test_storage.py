"""The storage engine: chunk files, the metadata store, the object service
over both, listings against a model, and crashes between the steps of a
write."""

import os
import sqlite3
import threading
import time

from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.damage import flip_a_byte
from z4node import durable
from z4node.hlc import HybridLogicalClock, from_seconds as hlc_from_seconds
from z4node.objects import streams
from z4node.objects.errors import ObjectError
from z4node.objects.service import ObjectService
from z4node.objects.system import SystemTables
from z4node.storage import chunks as chunks_module
from z4node.storage.atrest import open_encryption, use_at_rest
from z4node.storage.db import Database
from z4node.storage.chunks import CHUNK_SIZE, ChunkCorrupted, ChunkStore, chunk_hash
from z4node.storage.gc import GarbageCollector
from z4node.storage import meta as meta_module
from z4node.storage.meta import (SCHEMA, _MISS, HeadCache, ListEntry, MetaStore, Version,
                                 VersionTombstone,
                                 key_successor, list_heads, list_uploads)


async def body_of(*pieces):
    for piece in pieces:
        yield piece


async def collect(iterator):
    return b"".join([piece async for piece in iterator])


class Engine:
    """A node's storage, opened on a directory (again, to simulate a restart);
    ``environ`` may hold Z4_ENCRYPTION_KEY, as the node's does."""

    def __init__(self, directory, environ=None):
        self.directory = directory
        self.environ = environ or {}
        self.meta = MetaStore(reactor, os.path.join(directory, "meta.sqlite3"))
        self.chunks = ChunkStore(reactor, os.path.join(directory, "chunks"))
        self.hlc = HybridLogicalClock(reactor)
        self.system = SystemTables(self.meta, self.hlc, reactor)
        self.objects = ObjectService(reactor, self.meta, self.chunks, self.system, self.hlc)
        self.meta.start()
        self.chunks.start()

    async def open(self, bucket="bkt"):
        first_start = await self.meta.get_setting("node_id") is None
        self.at_rest = await open_encryption(self.meta, self.environ, self.directory,
                                             first_start)
        use_at_rest(self.at_rest, self.meta, self.chunks)
        await self.meta.set_setting_if_absent("node_id", "engine")
        await self.system.load()
        self.key = self.system.key_by_name("admin") or await self.system.create_key(
            "admin", is_admin=True)
        if bucket and self.system.bucket(bucket) is None:
            await self.objects.create_bucket(bucket, self.key)
        return self

    def close(self):
        if self.chunks is not None:
            self.chunks.stop()
            self.meta.stop()
            self.chunks = None

    async def put(self, key, data, bucket="bkt", pieces=1):
        size = max(1, len(data) // pieces)
        parts = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        return await self.objects.put_object(bucket, key, body_of(*parts),
                                             owner=self.key.user_id, meta={})

    async def get(self, key, bucket="bkt"):
        version = await self.objects.head_object(bucket, key)
        return await collect(self.objects.read(version, 0, version.size - 1))


class EngineTestCase(TestCase):
    # What the engines of a test see in their environment (a subclass sets
    # Z4_ENCRYPTION_KEY to run the same tests encrypted).
    environ = {}

    def engine(self, directory=None, bucket="bkt"):
        directory = directory or self.mktemp()
        os.makedirs(directory, exist_ok=True)
        engine = Engine(directory, self.environ)
        self.addCleanup(engine.close)
        return ensureDeferred(engine.open(bucket))


class ObjectStorageTests(EngineTestCase):
    async def test_small_object_is_inline(self):
        engine = await self.engine()
        version = await engine.put("k", b"hello")
        self.assertEqual(version.inline, b"hello")
        self.assertEqual(version.chunks, [])
        self.assertEqual(version.etag, "5d41402abc4b2a76b9719d911017c592")
        self.assertEqual(await engine.get("k"), b"hello")

    async def test_writes_after_a_version_stamped_ahead_are_newer(self):
        """A version written through a node whose clock runs ahead (one
        restarted starts up to 5 s ahead) arrives here as a replica; a
        later PUT or DELETE through this node must still win: a new
        version is stamped past the key's newest. (Stamped with this
        node's clock alone, the later PUT stayed hidden: a stale read.)"""
        engine = await self.engine()
        for i in range(2):
            ahead = hlc_from_seconds(time.time() + 5) + i
            await engine.objects.tables.write_version(Version(
                "bkt", "k", ahead, "null", False, 3, "etag", engine.key.user_id, {}, [],
                b"old"))
            self.assertEqual(await engine.get("k"), b"old")
            if i == 0:
                await engine.put("k", b"new")
                self.assertEqual(await engine.get("k"), b"new")
            else:
                await engine.objects.delete_object("bkt", "k", engine.key.user_id)
                with self.assertRaises(ObjectError) as raised:
                    await engine.get("k")
                self.assertEqual(raised.exception.code, "NoSuchKey")

    async def test_large_object_is_chunked_and_read_back(self):
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE * 2 + 12345)
        version = await engine.put("big", data, pieces=7)
        self.assertEqual([n for _, n in version.chunks], [CHUNK_SIZE, CHUNK_SIZE, 12345])
        self.assertEqual(await engine.get("big"), data)
        reader = engine.objects.read(version, CHUNK_SIZE - 10, CHUNK_SIZE + 9)
        self.assertEqual(await collect(reader), data[CHUNK_SIZE - 10:CHUNK_SIZE + 10])

    async def test_identical_content_is_stored_once(self):
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE + 100)
        await engine.put("one", data)
        await engine.put("two", data)
        files = [d for d, _, _ in engine.chunks.stored_hashes()]
        self.assertEqual(len(files), 2)
        self.assertEqual(await engine.get("two"), data)

    async def test_overwrite_and_delete_leave_tombstone(self):
        engine = await self.engine()
        await engine.put("k", b"one")
        await engine.put("k", b"two")
        self.assertEqual(await engine.get("k"), b"two")
        self.assertTrue(await engine.objects.delete_object("bkt", "k", engine.key.user_id))
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.head_object("bkt", "k")
        self.assertEqual(raised.exception.code, "NoSuchKey")
        rows = await engine.meta.db.read(lambda c: c.execute(
            "SELECT delete_marker FROM versions WHERE bucket='bkt'").fetchall())
        self.assertEqual(rows, [(1,)])

    async def test_corrupted_chunk_is_detected_and_set_aside(self):
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE + 1)
        version = await engine.put("k", data)
        path = engine.chunks.path(version.chunks[0][0])
        flip_a_byte(path, 100)
        with self.assertRaises(ChunkCorrupted):
            await engine.get("k")
        self.assertTrue(os.path.exists(path + ".corrupted"))

    async def test_a_write_of_rotted_content_replaces_the_rotted_file(self):
        """Dedup trusts a stored copy only once it reads back as its hash:
        a PUT of the same content brings the good bytes, and both objects
        read back."""
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE + 1)
        version = await engine.put("first", data)
        path = engine.chunks.path(version.chunks[0][0])
        flip_a_byte(path, 100)
        await engine.put("second", data)
        self.assertEqual(await engine.get("second"), data)
        self.assertEqual(await engine.get("first"), data)
        self.assertTrue(os.path.exists(path + ".corrupted"), "the rotted copy is kept aside")

    async def test_new_chunk_directories_are_fsynced_into_their_parents(self):
        engine = await self.engine()
        synced = []
        original = durable.fsync_directory

        def spy(directory):
            synced.append(directory)
            original(directory)
        self.patch(durable, "fsync_directory", spy)
        version = await engine.put("k", os.urandom(100_000))
        path = engine.chunks.path(version.chunks[0][0])
        leaf = os.path.dirname(path)
        middle = os.path.dirname(leaf)
        # The new file into its directory, the two new directories into
        # theirs (the store's root and the first level).
        self.assertEqual(synced, [engine.chunks.root, middle, leaf])

    async def test_bucket_not_empty(self):
        engine = await self.engine()
        await engine.put("k", b"x")
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.delete_bucket("bkt")
        self.assertEqual(raised.exception.code, "BucketNotEmpty")
        await engine.objects.delete_object("bkt", "k", engine.key.user_id)
        await engine.objects.delete_bucket("bkt")
        self.assertIsNone(engine.system.bucket("bkt"))

    async def test_multipart_assembles_in_order(self):
        engine = await self.engine()
        upload = await engine.objects.create_upload("bkt", "mp", owner="u", meta={})
        first = os.urandom(5 * 1024 * 1024)
        second = b"tail"
        p2 = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 2, body_of(second))
        p1 = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 1, body_of(first))
        version = await engine.objects.complete_upload(
            "bkt", "mp", upload.upload_id, [(1, p1.etag, {}), (2, f'"{p2.etag}"', {})], owner="u")
        self.assertTrue(version.etag.endswith("-2"))
        self.assertEqual(await engine.get("mp"), first + second)
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.get_upload("bkt", "mp", upload.upload_id)
        self.assertEqual(raised.exception.code, "NoSuchUpload")

    async def test_multipart_rules(self):
        engine = await self.engine()
        upload = await engine.objects.create_upload("bkt", "mp", owner="u", meta={})
        p1 = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 1, body_of(b"small"))
        p2 = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 2, body_of(b"x"))
        for requested, code in [
                ([(2, p2.etag, {}), (1, p1.etag, {})], "InvalidPartOrder"),
                ([(1, p2.etag, {})], "InvalidPart"),
                ([(3, p1.etag, {})], "InvalidPart"),
                ([(1, p1.etag, {"CRC32": "AAAAAA=="})], "InvalidPart"),
                ([(1, p1.etag, {}), (2, p2.etag, {})], "EntityTooSmall")]:
            with self.assertRaises(ObjectError) as raised:
                await engine.objects.complete_upload("bkt", "mp", upload.upload_id,
                                                     requested, owner="u")
            self.assertEqual(raised.exception.code, code)
        # A failed completion changes nothing: the upload is still open.
        version = await engine.objects.complete_upload(
            "bkt", "mp", upload.upload_id, [(2, p2.etag, {})], owner="u")
        self.assertEqual(await engine.get("mp"), b"x")
        self.assertEqual(version.size, 1)

    async def test_a_slow_part_upload_loses_to_its_retry(self):
        """A client that gave up on a slow part upload and sent the part
        again completes with the retry's ETag, also when the slow upload
        ends last (it used to replace the retry: InvalidPart)."""
        engine = await self.engine()
        upload = await engine.objects.create_upload("bkt", "mp", owner="u", meta={})
        rest = Deferred()

        async def slow_body():
            yield b"stale "
            yield await rest

        slow = ensureDeferred(engine.objects.upload_part("bkt", "mp", upload.upload_id, 1,
                                                         slow_body()))
        retry = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 1,
                                                 body_of(b"fresh"))
        rest.callback(b"bytes")
        await slow
        parts = await engine.objects.records.parts(upload.upload_id, 0, 10)
        self.assertEqual([(p.part_number, p.etag) for p in parts], [(1, retry.etag)])
        await engine.objects.complete_upload("bkt", "mp", upload.upload_id,
                                             [(1, retry.etag, {})], owner="u")
        self.assertEqual(await engine.get("mp"), b"fresh")
        # A part sent again after the first one ended replaces it.
        upload = await engine.objects.create_upload("bkt", "mp2", owner="u", meta={})
        await engine.objects.upload_part("bkt", "mp2", upload.upload_id, 1, body_of(b"one"))
        again = await engine.objects.upload_part("bkt", "mp2", upload.upload_id, 1,
                                                 body_of(b"two"))
        await engine.objects.complete_upload("bkt", "mp2", upload.upload_id,
                                             [(1, again.etag, {})], owner="u")
        self.assertEqual(await engine.get("mp2"), b"two")

    async def test_a_completion_is_remembered_for_a_while(self):
        engine = await self.engine()
        upload = await engine.objects.create_upload("bkt", "mp", owner="u", meta={})
        part = await engine.objects.upload_part("bkt", "mp", upload.upload_id, 1,
                                                body_of(b"x"))
        done = await engine.objects.complete_upload("bkt", "mp", upload.upload_id,
                                                    [(1, part.etag, {})], owner="u")
        # The retry sends the ETag quoted: the same part list.
        again = await engine.objects.complete_upload("bkt", "mp", upload.upload_id,
                                                     [(1, f'"{part.etag}"', {})], owner="u")
        self.assertEqual((again.version_id, again.hlc, again.etag),
                         (done.version_id, done.hlc, done.etag))
        # Past ended_upload_seconds it is forgotten.
        engine.objects.records.ended_upload_seconds = 0
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.complete_upload("bkt", "mp", upload.upload_id,
                                                 [(1, part.etag, {})], owner="u")
        self.assertEqual(raised.exception.code, "NoSuchUpload")

    async def test_ten_thousand_parts_make_a_fifty_gib_object(self):
        """S3's largest multipart shape, built from whole-object part copies
        (by reference, so the test writes 5 MiB, not 50 GiB)."""
        engine = await self.engine()
        piece = os.urandom(5 * 1024 * 1024)
        source = await engine.put("piece", piece)
        upload = await engine.objects.create_upload("bkt", "huge", owner="u", meta={})
        parts = await gatherResults([
            Deferred.fromCoroutine(engine.objects.copy_part(
                "bkt", "huge", upload.upload_id, number, source, 0, source.size - 1))
            for number in range(1, 10_001)])
        self.assertEqual({p.etag for p in parts}, {source.etag})
        version = await engine.objects.complete_upload(
            "bkt", "huge", upload.upload_id, [(p.part_number, p.etag, {}) for p in parts],
            owner="u")
        self.assertEqual(version.size, 10_000 * len(piece))
        self.assertTrue(version.etag.endswith("-10000"))
        stored = await engine.objects.head_object("bkt", "huge")
        for offset in (0, len(piece) - 3, 7_777 * len(piece) + 12345, version.size - 10):
            end = min(offset + 99, version.size - 1)
            got = await collect(engine.objects.read(stored, offset, end))
            within = offset % len(piece)
            expected = (piece + piece)[within:within + (end - offset + 1)]
            self.assertEqual(got, expected, offset)

    async def test_gc_frees_unreferenced_chunks_only_after_grace(self):
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE + 1)
        version = await engine.put("k", data)
        await engine.put("keep", data[:CHUNK_SIZE])
        await engine.objects.delete_object("bkt", "k", engine.key.user_id)
        gc = GarbageCollector(reactor, engine.meta, engine.chunks)
        deleted, _ = await gc.collect()
        self.assertEqual(deleted, 0, "nothing is collected inside the grace period")
        gc.chunk_grace_seconds = -60
        deleted, _ = await gc.collect()
        self.assertEqual(deleted, 1)
        self.assertFalse(os.path.exists(engine.chunks.path(version.chunks[1][0])))
        self.assertEqual(await engine.get("keep"), data[:CHUNK_SIZE])

    async def test_gc_spares_pinned_chunks(self):
        engine = await self.engine()
        data = os.urandom(CHUNK_SIZE + 1)
        version = await engine.put("k", data)
        await engine.objects.delete_object("bkt", "k", engine.key.user_id)
        for digest, _ in version.chunks:
            engine.chunks.pin(digest)
        gc = GarbageCollector(reactor, engine.meta, engine.chunks)
        gc.chunk_grace_seconds = -60
        deleted, _ = await gc.collect()
        self.assertEqual(deleted, 0)
        for digest, _ in version.chunks:
            self.assertTrue(os.path.exists(engine.chunks.path(digest)))

    async def test_a_failed_gc_pass_is_counted_and_the_next_one_runs(self):
        engine = await self.engine()
        clock = Clock()
        gc = GarbageCollector(clock, engine.meta, engine.chunks)
        original = engine.meta.unreferenced_chunks
        calls = []

        def flaky(*args):
            calls.append(args)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            return original(*args)
        self.patch(engine.meta, "unreferenced_chunks", flaky)
        gc.startService()
        self.addCleanup(gc.stopService)
        clock.advance(gc.interval_seconds)
        self.assertEqual(gc.status()["failures"], 1)
        self.assertIn("Input/output error", gc.status()["last_failure"]["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        clock.advance(gc.interval_seconds)
        await until(lambda: gc.status()["runs"] == 2)
        self.assertEqual(len(calls), 2, "the next pass ran")
        self.assertEqual(gc.status()["runs"], 2)
        self.assertEqual(gc.status()["failures"], 1)

    async def test_orphan_sweep_walks_a_directory_at_a_time_across_passes(self):
        engine = await self.engine()
        kept = {}
        for i in range(3):
            kept[f"k{i}"] = os.urandom(5000)
            await engine.put(f"k{i}", kept[f"k{i}"])
        orphans = []
        for _ in range(6):
            data = os.urandom(100)
            orphans.append(chunk_hash(data))
            await engine.chunks.put_chunk(orphans[-1], data)
        directories = list(engine.chunks.leaf_directories())
        self.assertGreater(len(directories), 2)
        gc = GarbageCollector(reactor, engine.meta, engine.chunks)
        gc.chunk_grace_seconds = -60
        gc.sweep_files_per_pass = 1
        left = []
        for _ in directories:
            await gc.collect()
            left.append(sum(os.path.exists(engine.chunks.path(d)) for d in orphans))
        # One directory per pass (each holds at least the one file of the
        # budget), so the orphans went a few at a time, and all of them.
        self.assertEqual(left[-1], 0)
        self.assertGreater(left[0], 0)
        self.assertEqual(left, sorted(left, reverse=True))
        for key, data in kept.items():
            self.assertEqual(await engine.get(key), data)


async def until(condition, deadline=30.0):
    """Wait on the real reactor until ``condition()`` holds (work driven by
    a fake clock may still need the metadata store's answers, which come
    through the real one); a generous deadline, never a timing assertion."""
    give_up = time.monotonic() + deadline
    while not condition() and time.monotonic() < give_up:
        await deferLater(reactor, 0.01, lambda: None)


class BucketDeletionRaceTests(EngineTestCase):
    """A write that began before a DeleteBucket and commits after it: the
    delete's transaction is held at its end until the write has queued its
    commit (the interleaving that let a PUT land in a deleted bucket)."""

    async def race(self, engine, write):
        """Run DeleteBucket on "bkt" and ``write()`` (a coroutine) so that
        the write's commit is queued while the delete's is in flight;
        (the delete's outcome, the write's)."""
        queued = threading.Event()
        purge = engine.meta.purge_bucket_contents
        writing = Deferred()

        def held_purge(c, bucket, now):
            # On the writer thread, inside the delete's transaction: start
            # the write now, and hold the delete until its commit is queued.
            # (The tombstone's own merge purges again: start it once.)
            if not queued.is_set():
                reactor.callFromThread(
                    lambda: Deferred.fromCoroutine(write()).chainDeferred(writing))
            queued.wait(30)
            purge(c, bucket, now)
        self.patch(engine.meta, "purge_bucket_contents", held_purge)
        records = engine.objects.records
        apply_version, apply_upload = records.apply_version, records.apply_upload

        def announce(original):
            def queue(*args, **kwargs):
                d = original(*args, **kwargs)
                queued.set()
                return d
            return queue
        self.patch(records, "apply_version", announce(apply_version))
        self.patch(records, "apply_upload", announce(apply_upload))
        deleting = Deferred.fromCoroutine(engine.objects.delete_bucket("bkt"))
        outcomes = []
        for d in (deleting, writing):
            try:
                outcomes.append(await d)
            except Exception as e:
                outcomes.append(e)
        return outcomes

    async def assert_gone_for_good(self, engine):
        """The name, created again, is empty, and no chunk kept a reference."""
        await engine.objects.create_bucket("bkt", engine.key)
        self.assertEqual(await engine.objects.list_objects("bkt", "", "", None, 10),
                         ([], False))
        self.assertEqual(await engine.objects.list_versions("bkt", "", "", None, None, 10),
                         ([], False))
        self.assertEqual(await engine.objects.list_uploads("bkt", "", "", None, None, 10),
                         ([], False))
        refs = await engine.meta.db.read(lambda c: c.execute(
            "SELECT count(*) FROM chunks WHERE refs > 0").fetchone()[0])
        self.assertEqual(refs, 0)

    def assert_refused(self, outcome):
        self.assertIsInstance(outcome, ObjectError)
        self.assertEqual(outcome.code, "NoSuchBucket")

    async def test_a_put_racing_delete_bucket_does_not_land(self):
        engine = await self.engine()
        deleted, put = await self.race(
            engine, lambda: engine.put("k", os.urandom(CHUNK_SIZE + 10)))
        self.assertIsNone(deleted)
        self.assert_refused(put)
        await self.assert_gone_for_good(engine)

    async def test_a_delete_marker_racing_delete_bucket_does_not_land(self):
        engine = await self.engine()
        await engine.objects.set_versioning("bkt", "Enabled")
        deleted, marker = await self.race(
            engine, lambda: engine.objects.delete_object("bkt", "k", engine.key.user_id))
        self.assertIsNone(deleted)
        self.assert_refused(marker)
        await self.assert_gone_for_good(engine)

    async def test_an_upload_racing_delete_bucket_is_not_created(self):
        engine = await self.engine()
        deleted, upload = await self.race(
            engine, lambda: engine.objects.create_upload("bkt", "k", owner="u", meta={}))
        self.assertIsNone(deleted)
        self.assert_refused(upload)
        await self.assert_gone_for_good(engine)

    async def test_a_name_created_again_starts_empty(self):
        """Whatever a bucket's last incarnation left (here: rows a racing
        PUT committed before this fix) is purged when the name is reused."""
        engine = await self.engine()
        version = await engine.put("k", os.urandom(CHUNK_SIZE + 10))
        await engine.objects.delete_object("bkt", "k", engine.key.user_id)
        await engine.objects.delete_bucket("bkt")
        stale = Version("bkt", "stale", version.hlc + 1, "null", False, version.size,
                        version.etag, version.owner, {}, version.chunks, None)
        await engine.meta.db.write(lambda c: meta_module._install_version(
            c, stale, 0.0, engine.meta.at_rest))
        await self.assert_gone_for_good(engine)

    async def test_a_live_bucket_created_meanwhile_is_not_taken_over(self):
        engine = await self.engine(bucket=None)
        other = await engine.system.create_key("other")
        first = Deferred.fromCoroutine(engine.objects.create_bucket("new", engine.key))
        second = Deferred.fromCoroutine(engine.objects.create_bucket("new", other))
        await first
        with self.assertRaises(ObjectError) as raised:
            await second
        self.assertEqual(raised.exception.code, "BucketAlreadyExists")
        self.assertEqual(engine.system.bucket("new").owner, engine.key.user_id)


def version_record(inline):
    return Version("b", "k", 1, "null", False, len(inline), "", "o", {}, [], inline)


class HeadCacheTests(EngineTestCase):
    async def test_reads_after_writes_see_the_writes(self):
        engine = await self.engine()
        await engine.put("k", b"one")
        self.assertEqual(await engine.get("k"), b"one")
        self.assertEqual(await engine.get("k"), b"one")
        await engine.put("k", b"two")
        self.assertEqual(await engine.get("k"), b"two")
        await engine.objects.delete_object("bkt", "k", engine.key.user_id)
        with self.assertRaises(ObjectError):
            await engine.objects.head_object("bkt", "k")
        await engine.put("k", b"three")
        self.assertEqual(await engine.get("k"), b"three")

    async def test_hot_key_is_served_from_memory(self):
        engine = await self.engine()
        await engine.put("hot", b"x" * 100)
        await engine.get("hot")
        reads = []
        original = engine.meta.db.read
        self.patch(engine.meta.db, "read", lambda *a: reads.append(a) or original(*a))
        self.assertEqual(await engine.get("hot"), b"x" * 100)
        self.assertEqual(reads, [])

    def test_a_read_that_raced_a_write_is_not_cached(self):
        cache = HeadCache()
        stale, fresh = version_record(b"old"), version_record(b"new")
        generation = cache.generation
        cache.forget(("b", "k"))
        cache.fill(("b", "k"), stale, generation)
        self.assertIs(cache.get(("b", "k")), _MISS)
        cache.fill(("b", "k"), fresh, cache.generation)
        self.assertIs(cache.get(("b", "k")), fresh)

    async def test_tombstones_are_cached_once_a_replica_read_asked_for_them(self):
        """A cluster read asks each replica for the newest version and the
        tombstones at least as new: a hot key's answer comes from memory
        too, and a tombstone written since is seen at once."""
        engine = await self.engine()
        put = await engine.put("k", b"one")
        records = engine.objects.records
        await engine.get("k")  # the version alone is cached: tombstones are read once
        reads = []
        original = engine.meta.db.read
        self.patch(engine.meta.db, "read", lambda *a: reads.append(a) or original(*a))
        for expected_reads in (1, 1):
            version, tombstones = await records.latest("bkt", "k", with_tombstones=True)
            self.assertEqual((version.version_id, list(tombstones)), (put.version_id, []))
            self.assertEqual(len(reads), expected_reads)
        tombstone = VersionTombstone("bkt", "k", put.version_id, put.hlc, put.hlc + 1)
        await records.apply_version(tombstone)
        for expected_reads in (2, 2):
            self.assertEqual(await records.latest("bkt", "k", with_tombstones=True),
                             (None, (tombstone,)))
            self.assertEqual(len(reads), expected_reads)
        self.assertIsNone((await records.latest("bkt", "k"))[0])
        self.assertEqual(len(reads), 2)

    def test_size_is_bounded(self):
        cache = HeadCache()
        cache.max_bytes = 100 * HeadCache._overhead
        for i in range(300):
            cache.fill(("b", str(i)), None, cache.generation)
        self.assertLessEqual(len(cache._entries), 100)
        self.assertEqual(cache.get(("b", "299")), None)
        self.assertIs(cache.get(("b", "0")), _MISS)

    def test_huge_chunk_lists_are_not_cached(self):
        cache = HeadCache()
        huge = Version("b", "k", 1, "null", False, 0, "", "o", {},
                       [(b"\0" * 32, 1)] * (cache.max_bytes // 64 // 36 + 1), None)
        cache.fill(("b", "k"), huge, cache.generation)
        self.assertIs(cache.get(("b", "k")), _MISS)


class ListingTests(EngineTestCase):
    def test_key_successor(self):
        self.assertEqual(key_successor(b"a/"), b"a0")
        self.assertEqual(key_successor(b"ab\xff"), b"ac")
        self.assertIsNone(key_successor(b"\xff"))

    @settings(max_examples=200, deadline=None)
    @given(keys=st.sets(st.text(alphabet="ab/c\u00e9", min_size=1, max_size=6), max_size=25),
           prefix=st.text(alphabet="ab/", max_size=2),
           delimiter=st.sampled_from(["", "/", "b", "//"]),
           limit=st.integers(1, 6))
    def test_paging_matches_model(self, keys, prefix, delimiter, limit):
        """Walking every page gives exactly what S3's definition gives."""
        c = sqlite3.connect(":memory:")
        c.executescript(SCHEMA)
        for key in keys:
            c.execute("INSERT INTO heads VALUES ('bkt', ?, 1, 0, 0, '', '')",
                      (key.encode("utf-8"),))
        c.execute("INSERT INTO heads VALUES ('bkt', ?, 1, 1, 0, '', '')", (b"a-deleted",))
        expected = []
        for key in sorted(keys, key=lambda k: k.encode()):
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest[:rest.index(delimiter) + len(delimiter)]
                if common not in expected:
                    expected.append(common)
            else:
                expected.append(key)
        seen = []
        after = None
        while True:
            items, truncated = list_heads(c, "bkt", prefix, delimiter, after, limit)
            self.assertLessEqual(len(items), limit)
            names = [i.key if isinstance(i, ListEntry) else i for i in items]
            seen.extend(names)
            if not truncated:
                break
            after = names[-1]
        self.assertEqual(seen, expected)


class UploadListingTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(uploads=st.lists(st.tuples(st.text(alphabet="ab/", min_size=1, max_size=4),
                                      st.sampled_from(["u1", "u2", "u3"])),
                            unique=True, max_size=20),
           prefix=st.text(alphabet="ab/", max_size=1),
           delimiter=st.sampled_from(["", "/"]),
           limit=st.integers(1, 5))
    def test_paging_matches_model(self, uploads, prefix, delimiter, limit):
        """Paging with S3's NextKeyMarker/NextUploadIdMarker visits exactly
        what one unlimited listing would: every upload or common prefix once."""
        c = sqlite3.connect(":memory:")
        c.executescript(SCHEMA)
        for key, upload_id in uploads:
            c.execute("INSERT INTO uploads VALUES (?, 'bkt', ?, 1, 'o', '{}')",
                      (upload_id + key, key.encode()))
        expected = []
        for key, upload_id in sorted(((k.encode(), u + k) for k, u in uploads)):
            key = key.decode()
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest[:rest.index(delimiter) + 1]
                if common not in expected:
                    expected.append(common)
            else:
                expected.append((key, upload_id))
        seen = []
        key_marker = upload_id_marker = None
        while True:
            items, truncated = list_uploads(c, "bkt", prefix, delimiter, key_marker,
                                            upload_id_marker, limit)
            self.assertLessEqual(len(items), limit)
            seen.extend(i if isinstance(i, str) else (i.key, i.upload_id) for i in items)
            if not truncated:
                break
            last = items[-1]
            key_marker, upload_id_marker = ((last, None) if isinstance(last, str)
                                            else (last.key, last.upload_id))
        self.assertEqual(seen, expected)
        self.assertEqual(list_uploads(c, "bkt", prefix, delimiter, None, None, 0), ([], False))


class _Crash(Exception):
    """Stands for the process dying at this point."""


class CrashTests(EngineTestCase):
    """Fail a PUT at each step of its write, reopen the data dir, and check
    the old object is intact and nothing torn is visible."""

    steps = ["fsync", "replace"]

    async def _crash_at(self, function, call_number):
        directory = self.mktemp()
        os.makedirs(directory)
        engine = Engine(directory, self.environ)
        await engine.open()
        old = os.urandom(CHUNK_SIZE + 10)
        await engine.put("k", old)
        original = getattr(chunks_module.os, function)
        calls = []

        def failing(*args, **kwargs):
            calls.append(args)
            if len(calls) == call_number:
                raise _Crash()
            return original(*args, **kwargs)

        self.patch(chunks_module.os, function, failing)
        new = os.urandom(CHUNK_SIZE * 2 + 20)
        # The replication layer reports the failed local write as a write
        # too few owners took (ServiceUnavailable); either way it failed.
        with self.assertRaises((_Crash, ObjectError)):
            await engine.put("k", new)
        engine.close()
        self.patch(chunks_module.os, function, original)
        reopened = Engine(directory, self.environ)
        self.addCleanup(reopened.close)
        await reopened.open()
        self.assertEqual(await reopened.get("k"), old)
        gc = GarbageCollector(reactor, reopened.meta, reopened.chunks)
        gc.chunk_grace_seconds = -60
        await gc.collect()
        for digest, path, _ in reopened.chunks.stored_hashes():
            self.assertIsNotNone(digest, f"temp file {path} survived the sweep")
            # Whole and readable (opened with its key when encrypted).
            self.assertEqual(chunk_hash(await reopened.chunks.get_chunk(digest)), digest)
        self.assertEqual(await reopened.get("k"), old)

    async def test_crash_at_every_step(self):
        # Each chunk write does at least two fsyncs (file, directory; one
        # more per directory it creates) and one rename: crash before the
        # first six fsyncs and each of the new object's 3 renames.
        for function, count in [("fsync", 6), ("replace", 3)]:
            for call_number in range(1, count + 1):
                await self._crash_at(function, call_number)

    async def test_crash_before_commit(self):
        """Chunks durable, record never committed: the old object stays."""
        directory = self.mktemp()
        os.makedirs(directory)
        engine = Engine(directory, self.environ)
        await engine.open()
        await engine.put("k", b"old")

        def refuse(*args, **kwargs):
            raise _Crash()
        self.patch(engine.objects.records, "apply_version", refuse)
        with self.assertRaises((_Crash, ObjectError)):
            await engine.put("k", os.urandom(CHUNK_SIZE + 5))
        engine.close()
        reopened = Engine(directory, self.environ)
        self.addCleanup(reopened.close)
        await reopened.open()
        self.assertEqual(await reopened.get("k"), b"old")


class GroupCommitTests(EngineTestCase):
    async def test_concurrent_writes_share_commits_and_all_land(self):
        engine = await self.engine()
        names = [f"k{i}" for i in range(200)]
        results = await Deferred.fromCoroutine(_gather([engine.put(n, n.encode()) for n in names]))
        self.assertEqual(len(results), 200)
        for name in names[::37]:
            self.assertEqual(await engine.get(name), name.encode())
        items, truncated = await engine.objects.records.list_heads("bkt", "", "", None, 1000)
        self.assertEqual(len(items), 200)

    async def test_failed_write_does_not_poison_its_batch(self):
        engine = await self.engine()

        def boom(c):
            raise ValueError("no")
        bad = engine.meta.db.write(boom)
        good = engine.put("fine", b"ok")
        with self.assertRaises(ValueError):
            await bad
        await good
        self.assertEqual(await engine.get("fine"), b"ok")


async def _gather(coroutines):
    return await gatherResults([Deferred.fromCoroutine(c) for c in coroutines])



class ReadBatchTests(TestCase):
    """Reads queued together come back to the reactor together, each with
    its own outcome; a long read holds back only the answers before it."""

    def database(self, flush_seconds):
        calls = []

        class CountingReactor:
            def callFromThread(self, f, *args):
                calls.append(f)
                reactor.callFromThread(f, *args)
        class OneReader(Database):
            read_threads = 1
            read_flush_seconds = flush_seconds
        db = OneReader(CountingReactor(), self.mktemp() + ".sqlite3",
                       "CREATE TABLE t (n INTEGER)")
        db.start()
        self.addCleanup(db.stop)
        return db, calls

    async def test_reads_queued_together_are_answered_in_one_wakeup(self):
        db, calls = self.database(flush_seconds=60)
        gate = threading.Event()
        first = db.read(lambda c: gate.wait(10))
        rest = [db.read(lambda c, i=i: c.execute("SELECT ?", (i,)).fetchone()[0])
                for i in range(100)]
        failing = db.read(lambda c: c.execute("SELECT nonsense FROM nowhere"))
        gate.set()
        self.assertTrue(await first)
        self.assertEqual(await gatherResults(rest), list(range(100)))
        with self.assertRaises(sqlite3.OperationalError):
            await failing
        # All 102 were queued while the reader waited in the first: one
        # batch, one wake-up of the reactor.
        self.assertEqual(len(calls), 1)

    async def test_a_long_read_does_not_hold_back_earlier_answers(self):
        db, calls = self.database(flush_seconds=0.05)
        gate = threading.Event()
        release = threading.Event()
        first = db.read(lambda c: gate.wait(10))
        quick = db.read(lambda c: time.sleep(0.1) or "quick")
        slow = db.read(lambda c: release.wait(10) and "slow")
        gate.set()
        self.assertEqual(await quick, "quick")
        self.assertFalse(slow.called)
        release.set()
        self.assertEqual(await slow, "slow")
        self.assertTrue(await first)


class PipelinedWriteTests(SynchronousTestCase):
    """store_body overlaps chunk writes with receiving and hashing the
    next chunks, at most WRITES_IN_FLIGHT at a time, and keeps order."""

    class Chunks:
        def __init__(self):
            self.writes = []       # (digest, Deferred) not yet fired
            self.most_in_flight = 0
            self.pinned = set()

        def run(self, fn, *args):
            return succeed(fn(*args))

        def put_chunk(self, digest, data):
            d = Deferred()
            self.writes.append((digest, d))
            self.most_in_flight = max(self.most_in_flight, len(self.writes))
            return d

        def land_oldest(self, failure=None):
            digest, d = self.writes.pop(0)
            if failure is None:
                d.callback(True)
            else:
                d.errback(failure)

        def pin(self, digest):
            self.pinned.add(digest)

        def unpin(self, digest):
            self.pinned.discard(digest)

    def body(self, chunks, count):
        data = [bytes([i]) * CHUNK_SIZE for i in range(count)]

        async def pieces():
            for piece in data:
                yield piece
        return data, pieces()

    def test_writes_overlap_bounded_and_in_order(self):
        chunks = self.Chunks()
        data, body = self.body(chunks, 6)
        result = Deferred.fromCoroutine(streams.store_body(chunks, body))
        # Hashing ran ahead of the writes up to the bound, then waited.
        self.assertEqual(len(chunks.writes), streams.WRITES_IN_FLIGHT + 1)
        while chunks.writes:
            self.assertNoResult(result)
            chunks.land_oldest()
        stored = self.successResultOf(result)
        self.assertEqual([d for d, _ in stored.chunks], [chunk_hash(c) for c in data])
        self.assertEqual(chunks.most_in_flight, streams.WRITES_IN_FLIGHT + 1)
        self.assertGreater(streams.WRITES_IN_FLIGHT, 1)

    def test_a_failed_write_unpins_only_after_every_write_settles(self):
        chunks = self.Chunks()
        data, body = self.body(chunks, 6)
        result = Deferred.fromCoroutine(streams.store_body(chunks, body))
        chunks.land_oldest(Failure(OSError("disk gone")))
        self.assertNoResult(result)
        self.assertTrue(chunks.pinned)
        while chunks.writes:
            chunks.land_oldest()
        self.failureResultOf(result, OSError)
        self.assertEqual(chunks.pinned, set())
