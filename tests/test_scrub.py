"""Tests for z4node.storage.scrub: a pass over the chunks at a rate limit,
resumed from its saved cursor, paused and started, bad chunks found and
named, and a step that fails retried -- on a fake clock with in-memory
chunks -- then once on a real data dir with flipped bytes."""

import json
import os
import time

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from z4node.storage.chunks import ChunkCorrupted, ChunkMissing, chunk_hash
from z4node.storage.scrub import SETTING, Scrubber

from tests.damage import flip_a_byte
from tests.nodeprocess import NodeProcess
from tests.test_storage import EngineTestCase


class MemoryChunks:
    """Enough of ChunkStore for the scrubber, in memory and synchronous."""

    def __init__(self):
        self.files = {}  # digest -> bytes as stored
        self.set_aside = []
        self.reads = 0
        self.fail_next_listing = False

    def add(self, data, damaged=False):
        digest = chunk_hash(data)
        self.files[digest] = b"x" + data[1:] if damaged else data
        return digest

    def run(self, fn, *args):
        return defer.maybeDeferred(fn, *args)

    def leaf_directories(self, after=""):
        if self.fail_next_listing:
            self.fail_next_listing = False
            raise OSError("disk hiccup")
        names = sorted({f"{d.hex()[:2]}/{d.hex()[2:4]}" for d in self.files})
        return (n for n in names if n > after)

    def stored_hashes(self, directory):
        for digest in sorted(self.files):
            if f"{digest.hex()[:2]}/{digest.hex()[2:4]}" == directory:
                yield digest, None, 0.0

    def get_chunk(self, digest):
        self.reads += 1
        data = self.files.get(digest)
        if data is None:
            return defer.fail(ChunkMissing(digest.hex()))
        if chunk_hash(data) != digest:
            del self.files[digest]
            self.set_aside.append(digest)
            return defer.fail(ChunkCorrupted(digest.hex()))
        return defer.succeed(data)


class MemoryMeta:
    def __init__(self):
        self.settings = {}
        self.users = {}

    def get_setting(self, name):
        return defer.succeed(self.settings.get(name))

    def set_setting(self, name, value):
        self.settings[name] = value
        return defer.succeed(None)

    def chunk_users(self, digest, limit):
        return defer.succeed(self.users.get(digest, [])[:limit])


class ScrubberTests(SynchronousTestCase):
    rate = 1000  # bytes per second

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.chunks = MemoryChunks()
        self.meta = MemoryMeta()
        self.digests = [self.chunks.add(bytes([i]) * 500) for i in range(1, 7)]

    def elapse(self, seconds, step=0.05):
        """Advance the clock in small steps: Clock.advance runs a call
        scheduled during it relative to the end of the whole advance."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def scrubber(self, **options):
        scrubber = Scrubber(self.clock, self.meta, self.chunks, rate=self.rate, **options)
        scrubber.startService()
        self.addCleanup(lambda: scrubber.running and scrubber.stopService())
        return scrubber

    def test_a_pass_reads_every_chunk_at_the_rate_limit(self):
        scrubber = self.scrubber()
        # 500 bytes at 1000 bytes/s: one chunk per half second.
        self.assertEqual(self.chunks.reads, 1)
        self.clock.advance(0.49)
        self.assertEqual(self.chunks.reads, 1)
        self.clock.advance(0.01)
        self.assertEqual(self.chunks.reads, 2)
        self.elapse(3)
        status = scrubber.status()
        self.assertEqual(status["chunks_verified"], 6)
        self.assertEqual(status["bytes_verified"], 3000)
        self.assertEqual((status["passes"], status["cursor"]), (1, None))

    def test_a_bad_chunk_is_set_aside_counted_and_named(self):
        bad = self.chunks.add(b"rotten" * 100, damaged=True)
        self.meta.users[bad] = ["photos/cat.jpg (version null)"]
        scrubber = self.scrubber()
        self.elapse(10)
        status = scrubber.status()
        self.assertEqual((status["bad_found"], status["unrecoverable"]), (1, 1))
        self.assertEqual(self.chunks.set_aside, [bad])
        self.assertEqual(status["chunks_verified"], 6)

    def test_a_bad_chunk_is_healed_from_another_copy(self):
        data = b"rotten" * 100
        bad = self.chunks.add(data, damaged=True)
        healed = []

        def heal(digest):
            healed.append(digest)
            self.chunks.files[digest] = data
            return defer.succeed(None)
        scrubber = Scrubber(self.clock, self.meta, self.chunks, rate=self.rate)
        scrubber.heal = heal
        scrubber.startService()
        self.addCleanup(scrubber.stopService)
        self.elapse(10)
        status = scrubber.status()
        self.assertEqual((status["bad_found"], status["healed"], status["unrecoverable"]),
                         (1, 1, 0))
        self.assertEqual(healed, [bad])
        self.assertEqual(self.chunks.files[bad], data)

    def test_a_restart_resumes_from_the_saved_cursor(self):
        scrubber = self.scrubber()
        self.elapse(1.2)
        scrubber.stopService()
        done = json.loads(self.meta.settings[SETTING])["chunks_verified"]
        self.assertGreater(done, 0)
        reads = self.chunks.reads
        again = self.scrubber()
        self.elapse(10)
        # Only what the saved cursor had not covered is read again (the
        # directory under way when it stopped, at most).
        self.assertLess(self.chunks.reads - reads, 6)
        self.assertEqual(again.status()["passes"], 1)

    def test_the_next_pass_waits_for_the_interval_unless_started(self):
        scrubber = self.scrubber(pass_interval=100)
        self.elapse(10)
        self.assertEqual(scrubber.status()["passes"], 1)
        self.elapse(50)
        self.assertEqual(scrubber.status()["passes"], 1)
        self.successResultOf(defer.ensureDeferred(scrubber.start_now()))
        self.elapse(10)
        self.assertEqual(scrubber.status()["passes"], 2)
        self.elapse(100)
        self.assertEqual(scrubber.status()["passes"], 3)

    def test_pause_stops_reading_and_start_resumes(self):
        scrubber = self.scrubber()
        self.successResultOf(defer.ensureDeferred(scrubber.pause()))
        reads = self.chunks.reads
        self.elapse(60)
        self.assertLessEqual(self.chunks.reads - reads, 1)
        self.assertFalse(scrubber.status()["running"])
        self.assertTrue(json.loads(self.meta.settings[SETTING])["paused"])
        self.successResultOf(defer.ensureDeferred(scrubber.start_now()))
        self.elapse(10)
        self.assertEqual(scrubber.status()["passes"], 1)

    def test_a_failed_step_is_counted_and_retried(self):
        self.chunks.fail_next_listing = True
        scrubber = self.scrubber()
        self.assertEqual(scrubber.status()["failures"], 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.elapse(Scrubber.retry_delay + 10)
        self.assertEqual(scrubber.status()["passes"], 1)


class RealChunksTests(EngineTestCase):
    """The scrubber over a real data dir: flipped bytes in stored chunk
    files are found, set aside and named with the object that uses them."""

    @defer.inlineCallbacks
    def test_flipped_bytes_are_found(self):
        engine = yield self.engine()
        for i in range(5):
            yield defer.ensureDeferred(engine.put(f"k{i}", os.urandom(10_000)))
        victims = []
        files = yield engine.chunks.run(lambda: list(engine.chunks.stored_hashes()))
        for digest, path, _ in files[:2]:
            flip_a_byte(path, 100)
            victims.append((digest, path))
        clock = Clock()
        scrubber = Scrubber(clock, engine.meta, engine.chunks, rate=10 ** 12)
        scrubber.startService()
        self.addCleanup(scrubber.stopService)
        for _ in range(500):
            if scrubber.status()["passes"]:
                break
            clock.advance(1)
            yield deferLater(reactor, 0.01, lambda: None)
        status = scrubber.status()
        self.assertEqual(status["passes"], 1)
        self.assertEqual((status["bad_found"], status["chunks_verified"]), (2, 3))
        for digest, path in victims:
            self.assertTrue(os.path.exists(path + ".corrupted"))
            users = yield engine.meta.chunk_users(digest, 5)
            self.assertEqual(len(users), 1)
            self.assertTrue(users[0].startswith("bkt/k"), users)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class ScrubCommandTests(TestCase):
    """``z4 scrub`` against a real node: a pass started on demand finds a
    chunk file whose bytes were flipped, and the log names its object."""

    timeout = 120

    def test_start_finds_a_flipped_chunk(self):
        node = NodeProcess(self).start()
        client = node.client()
        client.create_bucket(Bucket="photos")
        client.put_object(Bucket="photos", Key="cat.jpg", Body=os.urandom(100_000))
        chunks = os.path.join(node.data_dir, "chunks")
        paths = [os.path.join(d, f) for d, _, files in os.walk(chunks) for f in files]
        self.assertEqual(len(paths), 1)
        flip_a_byte(paths[0], 500)
        code, out, err = node.z4("scrub", "start", "--json")
        self.assertEqual(code, 0, err)
        passes = json.loads(out)["passes"]
        deadline = time.monotonic() + 60
        while True:
            code, out, err = node.z4("scrub", "status", "--json")
            status = json.loads(out)
            if status["passes"] > passes or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual((status["bad_found"], status["unrecoverable"]), (1, 1))
        self.assertTrue(os.path.exists(paths[0] + ".corrupted"))
        self.assertIn("photos/cat.jpg", node.log())
        code, out, _ = node.z4("scrub", "pause")
        self.assertEqual(code, 0)
        self.assertIn("Scrub: paused", out)
