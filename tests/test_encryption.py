"""Encryption at rest, in one process: the sealed formats, the node key's
checks at start-up, tampering, SSE-C in the object layer, and key rotation
(including a crash in the middle of one). The storage tests and their crash
tests run again here with encryption on."""

import base64
import hashlib
import json
import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests import test_storage
from tests.test_storage import Engine, body_of, collect
from z4node.objects.encryption import CustomerKey
from z4node.objects.errors import ObjectError
from z4node.storage.atrest import (ENCRYPTION_SETTING, KEY_ENV, ROTATION_SETTING,
                                   EncryptionRefused)
from z4node.storage.chunks import CHUNK_SIZE, ChunkCorrupted
from z4node.storage.gc import GarbageCollector
from z4node.storage.hint_store import HintStore
from z4node.storage.crypto import (AtRest, EncryptionKeyError, KeyRing, KeyUnavailable,
                                   Tampered, key_id, parse_node_key)
from z4node.storage.meta import RecordCorrupted
from z4node.storage.rotation import KeyRotation, RotationError
from z4node.storage.rotation import _step as rotation_step

KEY = bytes(range(32))
NEW_KEY = bytes(range(100, 132))
OTHER_KEY = b"\x07" * 32
ENV = {KEY_ENV: KEY.hex()}
NEW_ENV = {KEY_ENV: base64.b64encode(NEW_KEY).decode()}


def customer_key(seed):
    raw = hashlib.sha256(seed.encode()).digest()
    return CustomerKey(raw, base64.b64encode(hashlib.md5(raw).digest()).decode())


def marked(size, mark=b"PLAINTEXT-MARK-"):
    """``size`` bytes made of a recognisable pattern (to grep for)."""
    return (mark * (size // len(mark) + 1))[:size]


def files_under(directory):
    for root, _, names in os.walk(directory):
        for name in names:
            yield os.path.join(root, name)


class EncryptedObjectStorageTests(test_storage.ObjectStorageTests):
    environ = ENV


class EncryptedCrashTests(test_storage.CrashTests):
    """Every crash point of a PUT, with encryption on (the key row is one
    more step, committed between the file's fsync and its rename)."""

    environ = ENV


class EncryptedHeadCacheTests(test_storage.HeadCacheTests):
    environ = ENV


class NodeKeyTests(TestCase):
    def test_hex_and_base64_forms(self):
        self.assertEqual(parse_node_key(KEY.hex()), KEY)
        self.assertEqual(parse_node_key(KEY.hex().upper()), KEY)
        self.assertEqual(parse_node_key(base64.b64encode(KEY).decode()), KEY)
        self.assertEqual(parse_node_key(base64.urlsafe_b64encode(KEY).decode() + "\n"), KEY)

    def test_bad_keys_are_refused_with_a_reason(self):
        for text in ["", "abc", KEY.hex()[:-2], base64.b64encode(KEY[:16]).decode(),
                     "z" * 64, KEY.hex() + "00"]:
            with self.assertRaises(EncryptionKeyError) as raised:
                parse_node_key(text)
            self.assertIn("64 hex", str(raised.exception))

    def test_key_ids_differ_and_say_nothing_of_the_key(self):
        self.assertNotEqual(key_id(KEY), key_id(NEW_KEY))
        self.assertNotIn(key_id(KEY), KEY)

    def test_sealed_values_open_only_unchanged(self):
        at_rest = AtRest(KeyRing(KEY))
        blob = at_rest.seal_inline(b"hello")
        self.assertEqual(at_rest.open_inline(blob), b"hello")
        self.assertNotIn(b"hello", blob)
        self.assertNotEqual(blob, at_rest.seal_inline(b"hello"), "a fresh key each time")
        for i in range(len(blob)):
            damaged = bytearray(blob)
            damaged[i] ^= 1
            # A changed key id names a key nobody holds; anything else
            # fails authentication.
            with self.assertRaises((Tampered, KeyUnavailable)):
                at_rest.open_inline(bytes(damaged))
        with self.assertRaises(Tampered):
            at_rest.open_inline(blob[:-1])
        secret = at_rest.seal_secret("AKID", "s3cr3t")
        self.assertEqual(at_rest.open_secret("AKID", secret), "s3cr3t")
        with self.assertRaises(Tampered):
            at_rest.open_secret("OTHER", secret)  # bound to its key id

    def test_rewrap_keeps_the_sealed_bytes(self):
        old = AtRest(KeyRing(KEY))
        blob = old.seal_inline(b"data")
        both = AtRest(KeyRing(NEW_KEY, KEY))
        rewrapped = both.rewrap_inline(blob)
        self.assertEqual(rewrapped[-20:], blob[-20:])
        self.assertIsNone(both.rewrap_inline(rewrapped))
        self.assertEqual(AtRest(KeyRing(NEW_KEY)).open_inline(rewrapped), b"data")


class EncryptedEngineTestCase(TestCase):
    async def open(self, directory, environ=ENV):
        engine = Engine(directory, environ)
        try:
            await engine.open()
        except BaseException:
            engine.close()
            raise
        self.addCleanup(engine.close)
        return engine

    def new_dir(self):
        directory = self.mktemp()
        os.makedirs(directory)
        return directory


class AtRestTests(EncryptedEngineTestCase):
    async def test_no_plaintext_on_disk(self):
        directory = self.new_dir()
        engine = await self.open(directory)
        big, small = marked(CHUNK_SIZE + 5000), marked(3000, b"INLINE-MARK-")
        await engine.put("big", big)
        await engine.put("small", small)
        key = await engine.system.create_key("reader")
        self.assertEqual(await engine.get("big"), big)
        self.assertEqual(await engine.get("small"), small)
        engine.close()
        needles = [big[:64], big[-64:], small[:32], key.secret.encode()]
        for path in files_under(directory):
            with open(path, "rb") as f:
                content = f.read()
            for needle in needles:
                self.assertNotIn(needle, content, f"{needle[:20]!r} in {path}")
        reopened = await self.open(directory)
        self.assertEqual(reopened.system.key_by_name("reader").secret, key.secret)
        self.assertEqual(await reopened.get("small"), small)

    async def test_identical_content_is_encrypted_once(self):
        engine = await self.open(self.new_dir())
        data = os.urandom(CHUNK_SIZE + 100)
        one = await engine.put("one", data)
        files = {p: open(p, "rb").read() for _, p, _ in engine.chunks.stored_hashes()}
        two = await engine.put("two", data)
        self.assertEqual(one.chunks, two.chunks)
        self.assertEqual({p: open(p, "rb").read() for _, p, _ in
                          engine.chunks.stored_hashes()}, files)
        rows = await engine.meta.db.read(lambda c: c.execute(
            "SELECT count(*) FROM chunk_keys").fetchone()[0])
        self.assertEqual(rows, 2)

    async def test_tampered_chunk_file_is_an_error_never_bytes(self):
        engine = await self.open(self.new_dir())
        version = await engine.put("k", os.urandom(CHUNK_SIZE + 1))
        path = engine.chunks.path(version.chunks[1][0])
        with open(path, "r+b") as f:
            f.seek(0, 2)
            f.seek(f.tell() - 3)
            f.write(b"\x00\x00\x00")
        with self.assertRaises(ChunkCorrupted):
            await engine.get("k")
        self.assertTrue(os.path.exists(path + ".corrupted"))

    async def test_swapped_chunk_files_are_detected(self):
        engine = await self.open(self.new_dir())
        a = await engine.put("a", os.urandom(CHUNK_SIZE))
        b = await engine.put("b", os.urandom(CHUNK_SIZE))
        path_a, path_b = engine.chunks.path(a.chunks[0][0]), engine.chunks.path(b.chunks[0][0])
        os.rename(path_a, path_a + ".x")
        os.rename(path_b, path_a)
        os.rename(path_a + ".x", path_b)
        for key in ("a", "b"):
            with self.assertRaises(ChunkCorrupted):
                await engine.get(key)

    async def test_gc_drops_key_rows_whose_file_never_landed(self):
        engine = await self.open(self.new_dir())
        data = os.urandom(CHUNK_SIZE)
        version = await engine.put("k", data)
        digest = version.chunks[0][0]
        # A crash between a key's commit and its file's rename leaves this:
        stray = os.urandom(32)
        await engine.meta.db.write(lambda c: c.execute(
            "INSERT INTO chunk_keys VALUES (?, ?)",
            (stray, engine.at_rest.keyring.wrap(os.urandom(32)))))
        gc = GarbageCollector(reactor, engine.meta, engine.chunks)
        gc.chunk_grace_seconds = -60
        await gc.collect()
        keys = await engine.meta.db.read(lambda c: [h for (h,) in c.execute(
            "SELECT hash FROM chunk_keys")])
        self.assertEqual(keys, [digest])
        self.assertEqual(await engine.get("k"), data)

    async def test_damaged_key_row_is_detected(self):
        engine = await self.open(self.new_dir())
        version = await engine.put("k", os.urandom(CHUNK_SIZE))
        digest = version.chunks[0][0]

        def damage(c):
            (wrapped,) = c.execute("SELECT wrapped FROM chunk_keys WHERE hash=?",
                                   (digest,)).fetchone()
            c.execute("UPDATE chunk_keys SET wrapped=? WHERE hash=?",
                      (wrapped[:-1] + bytes([wrapped[-1] ^ 1]), digest))
        await engine.meta.db.write(damage)
        with self.assertRaises(ChunkCorrupted):
            await engine.get("k")

    async def test_tampered_inline_object_is_an_error_and_can_be_replaced(self):
        await self.tampered_inline_object_is_replaced(versioning=False)

    async def test_tampered_inline_version_is_replaced_in_a_versioned_bucket(self):
        """There a new version's stamp is read from the newest first: a
        damaged record must not stop it."""
        await self.tampered_inline_object_is_replaced(versioning=True)

    async def tampered_inline_object_is_replaced(self, versioning):
        directory = self.new_dir()
        engine = await self.open(directory)
        if versioning:
            await engine.objects.set_versioning("bkt", "Enabled")
        await engine.put("k", b"small object")
        engine.close()
        db = sqlite3.connect(os.path.join(directory, "meta.sqlite3"))
        (blob,) = db.execute("SELECT inline FROM versions WHERE key=?", (b"k",)).fetchone()
        db.execute("UPDATE versions SET inline=? WHERE key=?",
                   (blob[:-1] + bytes([blob[-1] ^ 0x80]), b"k"))
        db.commit()
        db.close()
        reopened = await self.open(directory)
        with self.assertRaises(RecordCorrupted):
            await reopened.get("k")
        # A damaged body never blocks overwriting it.
        await reopened.put("k", b"replacement")
        self.assertEqual(await reopened.get("k"), b"replacement")

    async def test_start_up_checks_of_the_node_key(self):
        plain_dir, sealed_dir = self.new_dir(), self.new_dir()
        (await self.open(plain_dir, {})).close()
        (await self.open(sealed_dir, ENV)).close()
        with self.assertRaises(EncryptionRefused) as raised:
            await self.open(plain_dir, ENV)
        self.assertIn("created without Z4_ENCRYPTION_KEY", str(raised.exception))
        with self.assertRaises(EncryptionRefused) as raised:
            await self.open(sealed_dir, {})
        self.assertIn("is encrypted", str(raised.exception))
        with self.assertRaises(EncryptionRefused) as raised:
            await self.open(sealed_dir, {KEY_ENV: OTHER_KEY.hex()})
        self.assertIn(key_id(KEY).hex(), str(raised.exception))
        with self.assertRaises(EncryptionKeyError):
            await self.open(sealed_dir, {KEY_ENV: "not a key"})
        (await self.open(sealed_dir, {KEY_ENV: base64.b64encode(KEY).decode()})).close()

    async def test_data_dir_from_before_encryption_stays_plaintext(self):
        directory = self.new_dir()
        engine = await self.open(directory, {})
        await engine.meta.db.write(lambda c: c.execute(
            "DELETE FROM node_settings WHERE name=?", (ENCRYPTION_SETTING,)))
        engine.close()
        with self.assertRaises(EncryptionRefused):
            await self.open(directory, ENV)
        reopened = await self.open(directory, {})
        self.assertFalse(reopened.at_rest.encrypted)


class CustomerKeyTests(EncryptedEngineTestCase):
    """SSE-C in the object layer, on an encrypted and a plaintext data dir."""

    async def check_round_trip(self, environ):
        directory = self.new_dir()
        engine = await self.open(directory, environ)
        ck, wrong = customer_key("mine"), customer_key("not mine")
        data = marked(CHUNK_SIZE + 77, b"CUSTOMER-MARK-")
        objects = engine.objects
        for key, body in (("big", data), ("small", data[:100])):
            version = await objects.put_object("bkt", key, body_of(body), owner="u", meta={},
                                               customer_key=ck)
            self.assertNotEqual(version.etag, hashlib.md5(body).hexdigest())
            head = await objects.head_object("bkt", key)
            sealing = objects.sealing_for(head, ck)
            self.assertEqual(await collect(objects.read(head, 0, head.size - 1, sealing)), body)
            self.assertEqual(await collect(objects.read(head, 5, 50, sealing)), body[5:51])
            for given, code in ((None, "InvalidRequest"), (wrong, "InvalidArgument")):
                with self.assertRaises(ObjectError) as raised:
                    objects.sealing_for(head, given)
                self.assertEqual(raised.exception.code, code)
            self.assertNotIn(ck.key.hex(), json.dumps(head.meta))
        plain = await engine.put("plain", data)
        sse_c = await objects.head_object("bkt", "big")
        self.assertFalse(set(plain.chunks) & set(sse_c.chunks), "SSE-C chunks never shared")
        with self.assertRaises(ObjectError) as raised:
            objects.sealing_for(plain, ck)
        self.assertEqual(raised.exception.code, "InvalidRequest")
        engine.close()
        for path in files_under(directory):
            with open(path, "rb") as f:
                self.assertNotIn(ck.key, f.read(), f"the customer key is in {path}")
        return directory

    async def test_round_trip_on_encrypted_data_dir(self):
        directory = await self.check_round_trip(ENV)
        for path in files_under(directory):
            with open(path, "rb") as f:
                self.assertNotIn(b"CUSTOMER-MARK-CUSTOMER", f.read())

    async def test_round_trip_on_plaintext_data_dir(self):
        directory = await self.check_round_trip({})
        engine = await self.open(directory, {})
        for name in ("big", "small"):
            version = await engine.objects.head_object("bkt", name)
            for digest, _ in version.chunks:
                with open(engine.chunks.path(digest), "rb") as f:
                    self.assertNotIn(b"CUSTOMER-MARK-CUSTOMER", f.read())
            if version.inline is not None:
                self.assertNotIn(b"CUSTOMER-MARK", version.inline)

    async def test_copies_between_keys(self):
        engine = await self.open(self.new_dir())
        objects = engine.objects
        ck, other = customer_key("a"), customer_key("b")
        data = os.urandom(CHUNK_SIZE + 3)
        await objects.put_object("bkt", "src", body_of(data), owner="u", meta={},
                                 customer_key=ck)
        source = await objects.head_object("bkt", "src")
        await objects.copy_object(source, "bkt", "re-keyed", owner="u", meta={},
                                  source_sealing=objects.sealing_for(source, ck),
                                  customer_key=other)
        await objects.copy_object(source, "bkt", "decrypted", owner="u", meta={},
                                  source_sealing=objects.sealing_for(source, ck))
        rekeyed = await objects.head_object("bkt", "re-keyed")
        self.assertEqual(await collect(objects.read(
            rekeyed, 0, rekeyed.size - 1, objects.sealing_for(rekeyed, other))), data)
        self.assertEqual(await engine.get("decrypted"), data)
        decrypted = await objects.head_object("bkt", "decrypted")
        self.assertEqual(decrypted.etag, hashlib.md5(data).hexdigest())

    async def test_multipart_parts_need_the_upload_key(self):
        engine = await self.open(self.new_dir())
        objects = engine.objects
        ck = customer_key("mp")
        upload = await objects.create_upload("bkt", "mp", owner="u", meta={}, customer_key=ck)
        first = os.urandom(5 * 1024 * 1024)
        for given, code in ((None, "InvalidRequest"), (customer_key("x"), "InvalidRequest")):
            with self.assertRaises(ObjectError) as raised:
                await objects.upload_part("bkt", "mp", upload.upload_id, 1, body_of(b"x"),
                                          customer_key=given)
            self.assertEqual(raised.exception.code, code)
        p1 = await objects.upload_part("bkt", "mp", upload.upload_id, 1, body_of(first),
                                       customer_key=ck)
        p2 = await objects.upload_part("bkt", "mp", upload.upload_id, 2, body_of(b"end"),
                                       customer_key=ck)
        version = await objects.complete_upload("bkt", "mp", upload.upload_id,
                                                [(1, p1.etag, {}), (2, p2.etag, {})], owner="u")
        self.assertTrue(version.etag.endswith("-2"))
        head = await objects.head_object("bkt", "mp")
        self.assertEqual(await collect(objects.read(head, 0, head.size - 1,
                                                    objects.sealing_for(head, ck))),
                         first + b"end")


class RotationTests(EncryptedEngineTestCase):
    async def fill(self, engine):
        """Chunked, inline and multipart objects and a key; what they hold."""
        contents = {f"small{i}": os.urandom(100 + i) for i in range(30)}
        contents["big"] = os.urandom(CHUNK_SIZE * 2 + 9)
        for name, data in contents.items():
            await engine.put(name, data)
        key = await engine.system.create_key("someone")
        return contents, key

    async def check(self, engine, contents, key):
        for name, data in contents.items():
            self.assertEqual(await engine.get(name), data, name)
        self.assertEqual(engine.system.key_by_name("someone").secret, key.secret)

    def chunk_files(self, engine):
        out = {}
        for digest, path, _ in engine.chunks.stored_hashes():
            with open(path, "rb") as f:
                out[path] = (f.read(), os.stat(path).st_mtime_ns)
        return out

    def rotation(self, engine, batch=7):
        rotation = KeyRotation(reactor, engine.meta, engine.at_rest)
        rotation.batch_rows = batch
        rotation.pause_seconds = 0
        return rotation

    async def test_rotation_rewraps_without_rewriting_data(self):
        directory = self.new_dir()
        engine = await self.open(directory)
        contents, key = await self.fill(engine)
        before = self.chunk_files(engine)
        rotation = self.rotation(engine)
        status = await rotation.start(NEW_KEY)
        self.assertTrue(status["rotating"])
        self.assertEqual(status["total"], 3 + 30)
        await rotation.resume()
        self.assertFalse(rotation.status()["rotating"])
        self.assertEqual(self.chunk_files(engine), before, "chunk files were rewritten")
        await self.check(engine, contents, key)
        engine.close()
        with self.assertRaises(EncryptionRefused) as raised:
            await self.open(directory, ENV)
        self.assertIn("rotated out", str(raised.exception))
        reopened = await self.open(directory, NEW_ENV)
        await self.check(reopened, contents, key)

    async def test_hinted_entries_are_sealed_and_survive_a_rotation(self):
        directory = self.new_dir()
        engine = await self.open(directory)
        secret = "the inline bytes of a small object"
        await HintStore(engine.meta).add_entry("n2", "versions", {"inline": secret}, 1.0)
        raw = await engine.meta.db.read(
            lambda c: c.execute("SELECT entry FROM hints").fetchone()[0])
        self.assertNotIn(secret.encode(), raw)
        rotation = self.rotation(engine)
        await rotation.start(NEW_KEY)
        await rotation.resume()
        engine.close()
        reopened = await self.open(directory, NEW_ENV)
        [hint] = await HintStore(reopened.meta).batch("n2", 0, 10)
        self.assertEqual((hint.table, hint.entry), ("versions", {"inline": secret}))

    async def test_crash_mid_rotation_then_resume_with_either_key(self):
        for restart_env in (ENV, NEW_ENV):
            directory = self.new_dir()
            engine = await self.open(directory)
            contents, key = await self.fill(engine)
            rotation = self.rotation(engine, batch=2)
            await rotation.start(NEW_KEY)
            await rotation.stop()
            # A few transactions, then the process "dies".
            for _ in range(3):
                await engine.meta.db.write(rotation_step, engine.at_rest, 2, 0)
            engine.close()
            reopened = await self.open(directory, restart_env)
            await self.check(reopened, contents, key)
            # Writes during the rotation use the new key.
            contents["during"] = os.urandom(CHUNK_SIZE + 1)
            await reopened.put("during", contents["during"])
            rotation = self.rotation(reopened, batch=2)
            state = await rotation.load()
            self.assertEqual(state["phase"], "inline")
            self.assertTrue(0 < state["done"] < state["total"], state)
            await rotation.resume()
            self.assertIsNone(rotation.state)
            await self.check(reopened, contents, key)
            reopened.close()
            final = await self.open(directory, NEW_ENV)
            await self.check(final, contents, key)
            final.close()

    async def test_rotation_refusals(self):
        engine = await self.open(self.new_dir())
        rotation = self.rotation(engine)
        with self.assertRaises(RotationError):
            await rotation.start(KEY)
        await rotation.start(NEW_KEY)
        await rotation.stop()
        with self.assertRaises(RotationError):
            await rotation.start(OTHER_KEY)
        await rotation.start(NEW_KEY)  # the same target resumes
        await rotation.resume()
        self.assertFalse(rotation.status()["rotating"])

    async def test_straggler_wrapped_by_old_key_is_rewrapped_at_the_end(self):
        engine = await self.open(self.new_dir())
        contents, key = await self.fill(engine)
        old = AtRest(KeyRing(KEY))
        rotation = self.rotation(engine)
        await rotation.start(NEW_KEY)
        await rotation.stop()
        # A row wrapped by the old key behind the cursor (what a race would
        # leave) is still found by the last transaction.
        await engine.meta.db.write(lambda c: c.execute(
            "UPDATE versions SET inline=? WHERE key=?",
            (old.seal_inline(b"late"), b"small0")))
        contents["small0"] = b"late"
        engine.meta.heads.forget(("bkt", "small0"))
        await rotation.resume()
        rows = await engine.meta.db.read(lambda c: c.execute(
            "SELECT count(*) FROM versions WHERE inline IS NOT NULL AND substr(inline,2,8)=?",
            (key_id(KEY),)).fetchone()[0])
        self.assertEqual(rows, 0)
        settings = await engine.meta.get_setting(ROTATION_SETTING)
        self.assertIsNone(settings)
        await self.check(engine, contents, key)
