"""The metadata store: SQLite tables for access keys, buckets, grants,
KMS keys, object versions, multipart state and chunk reference counts.

Every row that can be replicated carries an HLC timestamp, and deletes are
tombstones (``deleted`` flags, delete-marker versions), never missing rows,
so that replication can later merge replicas last-writer-wins without a
format change. Object keys are stored as UTF-8 BLOBs so that SQLite orders
them byte-wise, which is S3's listing order, and so that "the first key
after every key starting with P" is a byte string we can compute.

Each public method returns a Deferred; the work runs on
:class:`z4node.storage.db.Database`'s threads. Writes that must be atomic
with a check (conditional writes, multipart completion) take a callable run
inside the write transaction.

In an encrypted data dir (:meth:`MetaStore.use_encryption`) inline object
bytes and access-key secrets are sealed on their way into a row and opened
on their way out, on the database threads; callers see plaintext. Every
seal happens inside a write transaction with the node key current at that
moment, which is what lets a key rotation (``storage.rotation``) know that
nothing wrapped by the old key can appear behind its cursor. The wrapped
data keys of chunk files live in ``chunk_keys`` (see :class:`ChunkKeys`).
"""

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from twisted.logger import Logger

from z4node import hlc as hlclib
from z4node.storage.chunks import HASH_SIZE
from z4node.storage import merkle, usage
from z4node.storage.crypto import PLAINTEXT, KeyUnavailable, Tampered
from z4node.storage.db import Database

log = Logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_settings (
    name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY, name TEXT NOT NULL, secret TEXT NOT NULL,
    user_id TEXT NOT NULL, is_admin INTEGER NOT NULL, created REAL NOT NULL,
    hlc INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, created REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}', hlc INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS grants (
    bucket TEXT NOT NULL, access_key_id TEXT NOT NULL,
    can_read INTEGER NOT NULL, can_write INTEGER NOT NULL,
    can_own INTEGER NOT NULL, hlc INTEGER NOT NULL,
    PRIMARY KEY (bucket, access_key_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kms_keys (
    key_id TEXT PRIMARY KEY, name TEXT NOT NULL, wrapped TEXT NOT NULL,
    master_id TEXT NOT NULL, created REAL NOT NULL, hlc INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS versions (
    bucket TEXT NOT NULL, key BLOB NOT NULL, hlc INTEGER NOT NULL,
    version_id TEXT NOT NULL, delete_marker INTEGER NOT NULL,
    size INTEGER NOT NULL, etag TEXT NOT NULL, owner TEXT NOT NULL,
    meta TEXT NOT NULL, chunks BLOB, inline BLOB, stamp INTEGER,
    PRIMARY KEY (bucket, key, hlc)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS version_tombstones (
    bucket TEXT NOT NULL, key BLOB NOT NULL, version_id TEXT NOT NULL,
    hlc INTEGER NOT NULL, stamp INTEGER NOT NULL,
    PRIMARY KEY (bucket, key, version_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (
    bucket TEXT NOT NULL, key BLOB NOT NULL, hlc INTEGER NOT NULL,
    deleted INTEGER NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (bucket, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    hash BLOB PRIMARY KEY, refs INTEGER NOT NULL, zero_since REAL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_keys (
    hash BLOB PRIMARY KEY, wrapped BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks (zero_since)
    WHERE refs <= 0;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key BLOB NOT NULL,
    hlc INTEGER NOT NULL, owner TEXT NOT NULL, meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, part_number INTEGER NOT NULL,
    etag TEXT NOT NULL, size INTEGER NOT NULL, chunks BLOB NOT NULL,
    hlc INTEGER NOT NULL, meta TEXT NOT NULL,
    PRIMARY KEY (upload_id, part_number)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS completed_uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key BLOB NOT NULL,
    parts BLOB NOT NULL, version_id TEXT NOT NULL, hlc INTEGER NOT NULL,
    completed REAL NOT NULL);
CREATE INDEX IF NOT EXISTS completed_uploads_by_age ON completed_uploads (completed);
CREATE TABLE IF NOT EXISTS hints (
    id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, chunk BLOB,
    tbl TEXT, entry BLOB, size INTEGER NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hints_by_target ON hints (target, id);
CREATE UNIQUE INDEX IF NOT EXISTS hints_of_chunks ON hints (chunk, target)
    WHERE chunk IS NOT NULL;
""" + merkle.SCHEMA + usage.SCHEMA

# Every table whose rows carry an HLC timestamp (MetaStore.newest_hlc).
_HLC_TABLES = ("versions", "heads", "uploads", "parts", "access_keys", "buckets", "grants",
               "kms_keys", "version_tombstones")
# Columns that hold an HLC edit stamp (a metadata edit or a deletion).
_STAMP_TABLES = ("versions", "version_tombstones")
# The clock's durable high-water mark, in node_settings.
HLC_SETTING = "hlc_high_water"

_SIZE_BYTES = 4
_ENTRY = HASH_SIZE + _SIZE_BYTES


def pack_chunks(chunks):
    """``[(hash, size), ...]`` as the bytes stored in a row."""
    return b"".join(h + n.to_bytes(_SIZE_BYTES, "big") for h, n in chunks)


def unpack_chunks(blob):
    if not blob:
        return []
    return [(blob[i:i + HASH_SIZE],
             int.from_bytes(blob[i + HASH_SIZE:i + _ENTRY], "big"))
            for i in range(0, len(blob), _ENTRY)]


def key_successor(prefix):
    """The smallest byte string greater than every string starting with prefix."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass
class AccessKey:
    access_key_id: str
    name: str
    secret: str
    user_id: str
    is_admin: bool
    created: float
    hlc: int
    deleted: bool = False


@dataclass
class Bucket:
    name: str
    owner: str
    created: float
    hlc: int
    settings: dict = field(default_factory=dict)
    deleted: bool = False


@dataclass
class Grant:
    bucket: str
    access_key_id: str
    can_read: bool
    can_write: bool
    can_own: bool
    hlc: int


@dataclass
class KmsKey:
    """A named KMS key (``objects.kms``): its key material, wrapped by the
    KMS master key whose id is ``master_id``; never stored in the clear."""

    key_id: str
    name: str
    wrapped: str
    master_id: str
    created: float
    hlc: int
    deleted: bool = False


@dataclass
class Version:
    """One version of an object: its record, not its bytes."""

    bucket: str
    key: str
    hlc: int
    version_id: str
    delete_marker: bool
    size: int
    etag: str
    owner: str
    meta: dict
    chunks: list
    inline: bytes | None
    # The HLC of the record's last edit (a tag, retention, hold or ACL
    # change), which decides between two replicas' copies of it; None
    # until it is first edited (then it is ``hlc``).
    stamp: int | None = None

    @property
    def last_modified(self):
        return hlclib.wall_ms(self.hlc) / 1000.0

    @property
    def edited(self):
        return self.hlc if self.stamp is None else self.stamp


@dataclass
class VersionTombstone:
    """What remains of a version deleted by its id: kept (for the grace
    period) so that a replica that still has the version learns it is
    gone instead of bringing it back."""

    bucket: str
    key: str
    version_id: str
    hlc: int
    stamp: int

    edited = property(lambda self: self.stamp)


@dataclass
class ListEntry:
    key: str
    hlc: int
    size: int
    etag: str
    owner: str
    # A key whose newest version is a delete marker (listed only for
    # replicas' pages that are merged, see list_heads).
    deleted: bool = False

    @property
    def last_modified(self):
        return hlclib.wall_ms(self.hlc) / 1000.0


@dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    hlc: int
    owner: str
    meta: dict

    @property
    def initiated(self):
        return hlclib.wall_ms(self.hlc) / 1000.0


@dataclass
class CompletedUpload:
    """What a completed upload became, kept for a retried
    CompleteMultipartUpload: ``parts`` is the digest of the part list it
    was completed with."""

    upload_id: str
    bucket: str
    key: str
    parts: bytes
    version_id: str
    hlc: int


@dataclass
class Part:
    part_number: int
    etag: str
    size: int
    chunks: list
    hlc: int
    meta: dict

    @property
    def last_modified(self):
        return hlclib.wall_ms(self.hlc) / 1000.0


class UploadMissing(Exception):
    """The multipart upload does not exist (never did, or completed/aborted)."""


class BucketMissing(Exception):
    """The bucket a write adds to is gone (deleted while the write was
    under way): checked inside the write's transaction."""


class RecordCorrupted(Exception):
    """A sealed value in a row failed authentication or cannot be opened."""


def _version_from_row(bucket, key, row, at_rest):
    """A Version from a row of ``_VERSION_COLUMNS``, its inline bytes opened
    with ``at_rest``; with ``at_rest=None`` the inline bytes are not read
    (``inline`` is None) -- for records whose body nobody will serve."""
    hlc, version_id, delete_marker, size, etag, owner, meta, chunks, inline, stamp = row
    if inline is not None:
        if at_rest is None:
            inline = None
        else:
            try:
                inline = at_rest.open_inline(inline)
            except (Tampered, KeyUnavailable) as e:
                raise RecordCorrupted(
                    f"inline object {bucket}/{key.decode('utf-8', 'replace')}"
                    f" (hlc {hlc}): {e}") from None
    return Version(bucket, key.decode("utf-8"), hlc, version_id,
                   bool(delete_marker), size, etag, owner, json.loads(meta),
                   unpack_chunks(chunks), inline, stamp)


_VERSION_COLUMNS = ("hlc, version_id, delete_marker, size, etag, owner, meta, "
                    "chunks, inline, stamp")


_MISS = object()


class HeadCache:
    """The newest version of recently read keys (a delete marker included;
    None for keys with no version) and, once a replica read asked for them,
    the tombstones at least as new (which a coordinator merging replicas'
    answers needs), so that a hot object's GET or HEAD skips the reader
    thread, on a single node and on every replica a cluster read asks.

    Lives on the reactor thread. It is exact because every write of a
    version or a tombstone goes through this process's MetaStore, which
    drops the key when the write completes; and a read fills the cache only
    if no write completed while it was in flight (``generation``), so a slow
    read can never put back what a write replaced. (Several processes
    writing one data dir would each need to hear of the others' writes
    first.)
    """

    # Bytes of cached versions at most: inline bodies (up to 4 KiB) are
    # most of it; 32 MiB holds several thousand hot small objects.
    max_bytes = 32 * 1024 * 1024
    _overhead = 512
    _tombstone = 128

    def __init__(self):
        self._entries = OrderedDict()  # key -> (version, tombstones or None: not read)
        self._bytes = 0
        self.generation = 0

    @staticmethod
    def _size(entry):
        version, tombstones = entry
        size = HeadCache._overhead + HeadCache._tombstone * len(tombstones or ())
        if version is None:
            return size
        return size + len(version.inline or b"") + _ENTRY * len(version.chunks)

    def get(self, key):
        """The cached newest version of ``key``, or _MISS."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISS
        self._entries.move_to_end(key)
        return entry[0]

    def get_with_tombstones(self, key):
        """``(version, tombstones)`` of ``key`` if both are cached, else _MISS."""
        entry = self._entries.get(key)
        if entry is None or entry[1] is None:
            return _MISS
        self._entries.move_to_end(key)
        return entry

    def fill(self, key, version, generation, tombstones=None):
        """Cache what a read that began at ``generation`` found
        (``tombstones`` None: it did not read them)."""
        if generation != self.generation:
            return
        known = self._entries.get(key)
        if known is not None and (tombstones is None or known[1] is not None):
            return
        entry = (version, None if tombstones is None else tuple(tombstones))
        size = self._size(entry)
        if size > self.max_bytes // 64:
            # A huge multipart object's chunk list would push out hundreds
            # of small heads; its GET is dominated by the bytes anyway.
            return
        if known is not None:
            self._bytes -= self._size(known)
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= self._size(evicted)

    def forget(self, key):
        self.generation += 1
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= self._size(entry)


class ChunkKeys:
    """The wrapped data keys of encrypted chunk files, for ChunkStore.

    Every method blocks: they are called on the chunk I/O pool, inside the
    per-hash ordering of ChunkStore. A key is wrapped inside the write
    transaction, with whichever node key is current then (see module doc).
    """

    def __init__(self, db, at_rest):
        self._db = db
        self._at_rest = at_rest

    def load(self, digest):
        """The wrapped data key of ``digest``, or None."""
        row = self._db.read_blocking(lambda c: c.execute(
            "SELECT wrapped FROM chunk_keys WHERE hash=?", (digest,)).fetchone())
        return row[0] if row else None

    def save(self, digest, data_key):
        """Queue the key's row; a Future that completes when it is durable
        (so the caller can write the chunk file meanwhile)."""
        keyring = self._at_rest.keyring

        def write(c):
            c.execute("INSERT OR REPLACE INTO chunk_keys VALUES (?, ?)",
                      (digest, keyring.wrap(data_key)))
        return self._db.write_future(write)

    def drop(self, digest):
        self._db.write_blocking(lambda c: c.execute(
            "DELETE FROM chunk_keys WHERE hash=?", (digest,)))


class MetaStore:
    """Typed operations on the metadata tables; every method returns a Deferred."""

    def __init__(self, reactor, path):
        self._reactor = reactor
        self.db = Database(reactor, path, SCHEMA, upgrade=_upgrade)
        self.heads = HeadCache()
        self.at_rest = PLAINTEXT

    def use_encryption(self, at_rest):
        """Seal inline objects and secrets with ``at_rest`` from now on (and
        expect the stored ones sealed). Call before the first read."""
        self.at_rest = at_rest

    def chunk_keys(self):
        """Where ChunkStore keeps wrapped data keys (encrypted data dirs)."""
        return ChunkKeys(self.db, self.at_rest)

    def _write_version(self, bucket, key, fn):
        """Run a write that changes key's versions; the cache forgets key
        when it completes, committed or not."""
        def forget(result):
            self.heads.forget((bucket, key))
            return result
        return self.db.write(fn).addBoth(forget)

    def start(self):
        self.db.start()

    def stop(self):
        self.db.stop()

    # -- node settings -----------------------------------------------------

    def get_setting(self, name):
        def read(c):
            row = c.execute("SELECT value FROM node_settings WHERE name=?",
                            (name,)).fetchone()
            return row[0] if row else None
        return self.db.read(read)

    def set_setting(self, name, value):
        """Store value (None removes the setting)."""
        def write(c):
            if value is None:
                c.execute("DELETE FROM node_settings WHERE name=?", (name,))
            else:
                c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, ?)",
                          (name, value))
        return self.db.write(write)

    def set_setting_if_absent(self, name, value):
        """Store value unless one exists; fires with the value that is stored."""
        def write(c):
            c.execute("INSERT OR IGNORE INTO node_settings VALUES (?, ?)",
                      (name, value))
            return c.execute("SELECT value FROM node_settings WHERE name=?",
                             (name,)).fetchone()[0]
        return self.db.write(write)

    # -- the clock's persistence ---------------------------------------------

    def newest_hlc(self):
        """The newest HLC timestamp this node has stored in any table or
        promised in its high-water mark (0 if none): the clock is seeded
        with it at start. Scans the tables without an index on hlc (a
        start-up cost: 0.2 s per million versions and their heads, measured
        warm on a 2-core box)."""
        def read(c):
            newest = [c.execute(f"SELECT max(hlc) FROM {table}").fetchone()[0]
                      for table in _HLC_TABLES]
            newest += [c.execute(f"SELECT max(stamp) FROM {table}").fetchone()[0]
                       for table in _STAMP_TABLES]
            mark = c.execute("SELECT value FROM node_settings WHERE name=?",
                             (HLC_SETTING,)).fetchone()
            newest.append(int(mark[0]) if mark else None)
            return max((h for h in newest if h is not None), default=0)
        return self.db.read(read)

    def save_hlc_mark(self, timestamp):
        """Durably promise that no timestamp at or below ``timestamp`` will
        be issued again; a smaller mark than the stored one is ignored."""
        def write(c):
            c.execute("INSERT INTO node_settings VALUES (?, ?) ON CONFLICT (name)"
                      " DO UPDATE SET value=excluded.value"
                      " WHERE CAST(excluded.value AS INTEGER) > CAST(node_settings.value AS INTEGER)",
                      (HLC_SETTING, str(timestamp)))
        return self.db.write(write)

    # -- system tables: keys, buckets, grants (small, held in memory) -------

    def load_system_tables(self):
        """Every access key, bucket and grant, tombstones included."""
        at_rest = self.at_rest

        def read(c):
            keys = []
            for a, n, s, u, adm, cr, h, d in c.execute(
                    "SELECT access_key_id, name, secret, user_id, is_admin,"
                    " created, hlc, deleted FROM access_keys"):
                try:
                    s = at_rest.open_secret(a, s)
                except (Tampered, KeyUnavailable) as e:
                    # One damaged row costs that key, not the node.
                    log.error("access key {id} is unusable: its stored secret "
                              "cannot be opened ({error})", id=a, error=str(e))
                    continue
                keys.append(AccessKey(a, n, s, u, bool(adm), cr, h, bool(d)))
            buckets = [Bucket(n, o, cr, h, json.loads(st), bool(d))
                       for n, o, cr, st, h, d in c.execute(
                           "SELECT name, owner, created, settings, hlc, deleted"
                           " FROM buckets")]
            grants = [Grant(b, a, bool(r), bool(w), bool(o), h)
                      for b, a, r, w, o, h in c.execute(
                          "SELECT bucket, access_key_id, can_read, can_write,"
                          " can_own, hlc FROM grants")]
            return keys, buckets, grants
        return self.db.read(read)

    def save_key(self, key):
        at_rest = self.at_rest

        def write(c):
            c.execute(
                "INSERT INTO access_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (access_key_id) DO UPDATE SET name=excluded.name,"
                " secret=excluded.secret, user_id=excluded.user_id,"
                " is_admin=excluded.is_admin, created=excluded.created,"
                " hlc=excluded.hlc, deleted=excluded.deleted"
                " WHERE excluded.hlc > access_keys.hlc",
                (key.access_key_id, key.name,
                 at_rest.seal_secret(key.access_key_id, key.secret), key.user_id,
                 int(key.is_admin), key.created, key.hlc, int(key.deleted)))
        return self.db.write(write)

    def load_kms_keys(self):
        """Every KMS key record, tombstones included."""
        def read(c):
            return [KmsKey(k, n, w, m, cr, h, bool(d)) for k, n, w, m, cr, h, d in c.execute(
                "SELECT key_id, name, wrapped, master_id, created, hlc, deleted"
                " FROM kms_keys")]
        return self.db.read(read)

    def save_kms_key(self, key):
        def write(c):
            c.execute(
                "INSERT INTO kms_keys VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET name=excluded.name,"
                " wrapped=excluded.wrapped, master_id=excluded.master_id,"
                " created=excluded.created, hlc=excluded.hlc, deleted=excluded.deleted"
                " WHERE excluded.hlc > kms_keys.hlc",
                (key.key_id, key.name, key.wrapped, key.master_id, key.created,
                 key.hlc, int(key.deleted)))
        return self.db.write(write)

    def save_grant(self, grant):
        def write(c):
            c.execute(
                "INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (bucket, access_key_id) DO UPDATE SET"
                " can_read=excluded.can_read, can_write=excluded.can_write,"
                " can_own=excluded.can_own, hlc=excluded.hlc"
                " WHERE excluded.hlc > grants.hlc",
                (grant.bucket, grant.access_key_id, int(grant.can_read),
                 int(grant.can_write), int(grant.can_own), grant.hlc))
        return self.db.write(write)

    def save_bucket(self, bucket, precondition=None):
        """Upsert a bucket row; ``precondition(c)`` runs first in the same
        transaction and may raise to cancel the write."""
        def write(c):
            if precondition is not None:
                precondition(c)
            c.execute(
                "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner=excluded.owner,"
                " created=excluded.created, settings=excluded.settings,"
                " hlc=excluded.hlc, deleted=excluded.deleted"
                " WHERE excluded.hlc > buckets.hlc",
                (bucket.name, bucket.owner, bucket.created,
                 json.dumps(bucket.settings, sort_keys=True), bucket.hlc,
                 int(bucket.deleted)))
        return self.db.write(write)

    @staticmethod
    def bucket_has_objects(c, bucket):
        """True while any live object is in the bucket (in a transaction)."""
        return c.execute("SELECT 1 FROM heads WHERE bucket=? AND deleted=0"
                         " LIMIT 1", (bucket,)).fetchone() is not None

    @staticmethod
    def bucket_has_versions(c, bucket):
        """True while any version or delete marker is in the bucket (in a
        transaction): a bucket that has had versioning must lose every
        version before it can be deleted, as in S3."""
        return c.execute("SELECT 1 FROM versions WHERE bucket=? LIMIT 1",
                         (bucket,)).fetchone() is not None

    def purge_bucket_contents(self, c, bucket, now):
        """Drop an emptied bucket's tombstones and open uploads (in a transaction)."""
        for (upload_id,) in c.execute(
                "SELECT upload_id FROM uploads WHERE bucket=?", (bucket,)).fetchall():
            self._drop_upload(c, upload_id, now)
        for key, hlc, chunks in c.execute(
                "SELECT key, hlc, chunks FROM versions WHERE bucket=?",
                (bucket,)).fetchall():
            _add_refs(c, unpack_chunks(chunks), -1, now)
        c.execute("DELETE FROM versions WHERE bucket=?", (bucket,))
        c.execute("DELETE FROM version_tombstones WHERE bucket=?", (bucket,))
        merkle.drop_bucket(c, bucket)
        c.execute("DELETE FROM heads WHERE bucket=?", (bucket,))
        c.execute("DELETE FROM bucket_usage WHERE bucket=?", (bucket,))

    # -- object versions -----------------------------------------------------

    def versions_of_keys(self, bucket, after_key, limit):
        """Every version of the next ``limit`` keys after ``after_key`` (None:
        from the first), newest first: ``[(key, [Version, ...]), ...]``. The
        lifecycle worker walks a bucket with it, a batch at a time."""
        def read(c):
            after = after_key.encode("utf-8") if after_key is not None else b""
            op = ">" if after_key is not None else ">="
            keys = [k for (k,) in c.execute(
                f"SELECT key FROM heads WHERE bucket=? AND key {op} ? ORDER BY key"
                " LIMIT ?", (bucket, after, limit))]
            return [(k.decode("utf-8"), [
                _version_from_row(bucket, k, row, None) for row in c.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=?"
                    " ORDER BY hlc DESC", (bucket, k))]) for k in keys]
        return self.db.read(read)

    @staticmethod
    def _drop_upload(c, upload_id, now):
        for (chunks,) in c.execute("SELECT chunks FROM parts WHERE upload_id=?",
                                   (upload_id,)).fetchall():
            _add_refs(c, unpack_chunks(chunks), -1, now)
        c.execute("DELETE FROM parts WHERE upload_id=?", (upload_id,))
        c.execute("DELETE FROM uploads WHERE upload_id=?", (upload_id,))

    # -- garbage collection --------------------------------------------------

    def unreferenced_chunks(self, zero_before, limit):
        """Chunks no version or part has used since ``zero_before`` (unix s)."""
        def read(c):
            return [h for (h,) in c.execute(
                "SELECT hash FROM chunks WHERE refs<=0 AND zero_since<?"
                " LIMIT ?", (zero_before, limit))]
        return self.db.read(read)

    def forget_chunks(self, hashes):
        """Drop the rows of chunks still unreferenced; fires with those hashes."""
        def write(c):
            gone = []
            for h in hashes:
                if c.execute("DELETE FROM chunks WHERE hash=? AND refs<=0",
                             (h,)).rowcount:
                    gone.append(h)
            return gone
        return self.db.write(write)

    def keys_without_chunk_rows(self, after, limit):
        """Hashes in ``chunk_keys`` after ``after`` with no ``chunks`` row
        (candidates for GarbageCollector's key sweep), in hash order."""
        def read(c):
            return [h for (h,) in c.execute(
                "SELECT hash FROM chunk_keys k WHERE hash>? AND NOT EXISTS"
                " (SELECT 1 FROM chunks c WHERE c.hash=k.hash) ORDER BY hash LIMIT ?",
                (after, limit))]
        return self.db.read(read)

    def known_chunks(self, hashes):
        """The subset of hashes that have a row (referenced or in grace)."""
        def read(c):
            return {h for h in hashes if c.execute(
                "SELECT 1 FROM chunks WHERE hash=?", (h,)).fetchone()}
        return self.db.read(read)

    def bucket_usage(self):
        """Objects and bytes of each bucket held here (see
        :mod:`z4node.storage.usage`): one row a bucket, no scan."""
        return self.db.read(usage.read)

    def referenced_chunks(self, hashes):
        """The subset of hashes a version or part on this node uses."""
        def read(c):
            return {h for h in hashes if c.execute(
                "SELECT 1 FROM chunks WHERE hash=? AND refs>0", (h,)).fetchone()}
        return self.db.read(read)

    def chunk_users(self, digest, limit):
        """Up to ``limit`` descriptions of what uses a chunk: object
        versions (``bucket/key (version V)``) and upload parts (``upload U
        part N``). Scans every row: for reports of damage, not for serving."""
        def read(c):
            users = [f"{bucket}/{key.decode('utf-8', 'replace')} (version {version_id})"
                     for bucket, key, version_id in c.execute(
                         "SELECT bucket, key, version_id FROM versions"
                         " WHERE instr(chunks, ?) > 0 LIMIT ?", (digest, limit))]
            users += [f"upload {upload_id} part {number}"
                      for upload_id, number in c.execute(
                          "SELECT upload_id, part_number FROM parts"
                          " WHERE instr(chunks, ?) > 0 LIMIT ?", (digest, limit))]
            return users[:limit]
        return self.db.read(read)

    def collect_tombstones(self, older_than_hlc, limit):
        """Remove delete markers, and tombstones of versions deleted by id,
        older than the grace period; fires with a count.

        Only in buckets that never had versioning: there a marker is the
        key's only version and nobody can list it. In a versioned bucket a
        marker is a version like any other (listed, and hiding older
        versions); it goes when a client or a lifecycle rule removes it.
        """
        collected = []

        def write(c):
            rows = c.execute(
                "SELECT bucket, key, hlc FROM heads WHERE deleted=1 AND hlc<?"
                " AND bucket NOT IN (SELECT name FROM buckets WHERE"
                " json_extract(settings, '$.versioning') IS NOT NULL)"
                " LIMIT ?", (older_than_hlc, limit)).fetchall()
            for bucket, key, hlc in rows:
                for version_id, stamp in c.execute(
                        "SELECT version_id, coalesce(stamp, hlc) FROM versions WHERE bucket=?"
                        " AND key=? AND hlc<=? AND delete_marker=1",
                        (bucket, key, hlc)).fetchall():
                    merkle.change(c, bucket, key, version_id, (False, stamp), None)
                c.execute("DELETE FROM versions WHERE bucket=? AND key=? AND hlc<=?"
                          " AND delete_marker=1", (bucket, key, hlc))
                c.execute("DELETE FROM heads WHERE bucket=? AND key=? AND hlc=?",
                          (bucket, key, hlc))
                collected.append((bucket, key.decode("utf-8")))
            for bucket, key, version_id, stamp in c.execute(
                    "SELECT bucket, key, version_id, stamp FROM version_tombstones"
                    " WHERE stamp<?", (older_than_hlc,)).fetchall():
                merkle.change(c, bucket, key, version_id, (True, stamp), None)
                collected.append((bucket, key.decode("utf-8")))
            gone = c.execute("DELETE FROM version_tombstones WHERE stamp<?",
                             (older_than_hlc,)).rowcount
            return len(rows) + gone

        def forget(result):
            for cache_key in collected:
                self.heads.forget(cache_key)
            return result
        return self.db.write(write).addBoth(forget)

def common_prefix(key, prefix, delimiter):
    """The common prefix (bytes) that groups ``key`` in a listing with
    ``prefix`` and ``delimiter``, or None if the key is listed itself."""
    if not delimiter:
        return None
    cut = key.find(delimiter, len(prefix))
    return key[:cut + len(delimiter)] if cut >= 0 else None


def is_common_prefix(marker, prefix, delimiter):
    """Whether a listing marker is a common prefix (so "after" it means past
    every key under it)."""
    return (bool(delimiter) and marker.startswith(prefix)
            and common_prefix(marker, prefix, delimiter) == marker)


def list_heads(c, bucket, prefix, delimiter, after, limit, with_deleted=False):
    """One page of live keys in byte order (runs on a reader thread).

    Returns ``(items, truncated)`` where items are ListEntry or str (a
    common prefix), at most ``limit`` of them, all greater than ``after``
    (a key or common prefix). A page costs O(page): each common prefix is
    skipped with one index seek past every key under it.

    ``with_deleted`` lists keys whose newest version is a delete marker
    too (``deleted`` set, outside common prefixes only), for a page that
    will be merged with other replicas' pages: one replica's delete marker
    must be able to hide another's stale live key.
    """
    prefix_b = prefix.encode("utf-8")
    delim_b = delimiter.encode("utf-8") if delimiter else b""
    after_b = after.encode("utf-8") if after is not None else None
    items = []
    cursor, inclusive = (after_b, False) if after_b is not None else (prefix_b, True)
    if after_b is not None and after_b < prefix_b:
        cursor, inclusive = prefix_b, True
    # A common prefix given as ``after`` means "past all of it".
    if after_b is not None and is_common_prefix(after_b, prefix_b, delim_b):
        successor = key_successor(after_b)
        if successor is None:
            return items, False
        cursor, inclusive = successor, True
    batch = max(limit + 1, 16)
    while True:
        op = ">=" if inclusive else ">"
        live = "" if with_deleted else " AND deleted=0"
        rows = c.execute(
            f"SELECT key, hlc, size, etag, owner, deleted FROM heads"
            f" WHERE bucket=? AND key {op} ?{live}"
            f" ORDER BY key LIMIT ?", (bucket, cursor, batch)).fetchall()
        if not rows:
            return items, False
        jumped = False
        for key, hlc, size, etag, owner, deleted in rows:
            if not key.startswith(prefix_b):
                return items, False
            common = common_prefix(key, prefix_b, delim_b)
            if deleted and common is not None:
                cursor, inclusive = key, False
                continue
            if common is not None:
                if len(items) == limit:
                    return items, True
                items.append(common.decode("utf-8"))
                successor = key_successor(common)
                if successor is None:
                    return items, False
                cursor, inclusive, jumped = successor, True, True
                break
            if len(items) == limit:
                return items, True
            items.append(ListEntry(key.decode("utf-8"), hlc, size, etag, owner,
                                   bool(deleted)))
            cursor, inclusive = key, False
        if not jumped and len(rows) < batch:
            return items, False


def list_uploads(c, bucket, prefix, delimiter, key_marker, upload_id_marker, limit):
    """One page of open uploads in (key, upload id) order (reader thread).

    Returns ``(items, truncated)``: Upload records and common prefixes
    (str), at most ``limit``, after the markers as S3 defines them (with no
    upload-id marker, after every upload of the marker key; a marker that is
    a common prefix skips all of it). Like :func:`list_heads`, a common
    prefix costs one index seek, so a page costs O(page).
    """
    prefix_b = prefix.encode("utf-8")
    delim_b = delimiter.encode("utf-8") if delimiter else b""
    items = []
    if limit == 0:
        return items, False
    # The cursor: ("ge", key) | ("gt", key) | ("after", key, upload id).
    cursor = ("ge", prefix_b)
    if key_marker is not None:
        marker_b = key_marker.encode("utf-8")
        if is_common_prefix(marker_b, prefix_b, delim_b):
            successor = key_successor(marker_b)
            if successor is None:
                return items, False
            cursor = ("ge", successor)
        elif upload_id_marker:
            cursor = ("after", marker_b, upload_id_marker)
        else:
            cursor = ("gt", marker_b)
        if cursor[1] < prefix_b:
            cursor = ("ge", prefix_b)
    batch = max(limit + 1, 16)
    while True:
        if cursor[0] == "after":
            where, params = "(key>? OR (key=? AND upload_id>?))", (cursor[1], cursor[1], cursor[2])
        else:
            where, params = f"key{'>=' if cursor[0] == 'ge' else '>'}?", (cursor[1],)
        rows = c.execute(
            f"SELECT upload_id, key, hlc, owner, meta FROM uploads WHERE bucket=? AND {where}"
            " ORDER BY key, upload_id LIMIT ?", (bucket, *params, batch)).fetchall()
        jumped = False
        for upload_id, key, hlc, owner, meta in rows:
            if not key.startswith(prefix_b):
                return items, False
            common = common_prefix(key, prefix_b, delim_b)
            if common is not None:
                if len(items) == limit:
                    return items, True
                items.append(common.decode("utf-8"))
                successor = key_successor(common)
                if successor is None:
                    return items, False
                cursor, jumped = ("ge", successor), True
                break
            if len(items) == limit:
                return items, True
            items.append(Upload(upload_id, bucket, key.decode("utf-8"), hlc, owner,
                                json.loads(meta)))
            cursor = ("after", key, upload_id)
        if not jumped and len(rows) < batch:
            return items, False


# Versions listed without their bytes or chunk lists.
_LISTED_COLUMNS = "hlc, version_id, delete_marker, size, etag, owner, meta, NULL, NULL, stamp"


def list_versions(c, bucket, prefix, delimiter, key_marker, version_id_marker,
                  marker_hlc, limit):
    """One page of ListObjectVersions (runs on a reader thread).

    Versions come in S3's order: keys byte-wise ascending, each key's
    versions newest first. Returns ``(items, truncated)``: items are
    ``(Version, is_latest)`` (delete markers are Versions too, without
    bytes) or str (a common prefix), at most ``limit``. The page starts
    after ``key_marker``; with ``version_id_marker`` (and ``marker_hlc``
    when the id tells its timestamp) it starts with the versions of
    ``key_marker`` older than that one. Common prefixes are skipped with one
    index seek each, as in :func:`list_heads`.
    """
    prefix_b = prefix.encode("utf-8")
    delim_b = delimiter.encode("utf-8") if delimiter else b""
    items = []

    def grouped(key):
        return common_prefix(key, prefix_b, delim_b)

    def add_versions(key, head_hlc, below_hlc):
        """Append key's versions older than below_hlc; False when the page is full."""
        query = f"SELECT {_LISTED_COLUMNS} FROM versions WHERE bucket=? AND key=?"
        params = [bucket, key]
        if below_hlc is not None:
            query += " AND hlc<?"
            params.append(below_hlc)
        query += " ORDER BY hlc DESC LIMIT ?"
        params.append(limit - len(items) + 1)
        for row in c.execute(query, params).fetchall():
            if len(items) == limit:
                return False
            version = _version_from_row(bucket, key, row, None)
            items.append((version, version.hlc == head_hlc))
        return True

    cursor, inclusive = prefix_b, True
    if key_marker is not None:
        marker_b = key_marker.encode("utf-8")
        if marker_b >= prefix_b:
            cursor, inclusive = marker_b, False
        if version_id_marker is not None and marker_b.startswith(prefix_b) \
                and grouped(marker_b) is None:
            if marker_hlc is None:
                found = _version_by_id(c, bucket, key_marker, version_id_marker)
                marker_hlc = found.hlc if found is not None else None
            if marker_hlc is not None:
                head = c.execute("SELECT hlc FROM heads WHERE bucket=? AND key=?",
                                 (bucket, marker_b)).fetchone()
                if head is not None and not add_versions(marker_b, head[0], marker_hlc):
                    return items, True
        elif version_id_marker is None and grouped(marker_b) == marker_b:
            # A common prefix given as the marker means "past all of it".
            successor = key_successor(marker_b)
            if successor is None:
                return items, False
            cursor, inclusive = successor, True
    batch = max(limit + 1, 16)
    while True:
        op = ">=" if inclusive else ">"
        rows = c.execute(
            f"SELECT key, hlc FROM heads WHERE bucket=? AND key {op} ?"
            " ORDER BY key LIMIT ?", (bucket, cursor, batch)).fetchall()
        if not rows:
            return items, False
        jumped = False
        for key, head_hlc in rows:
            if not key.startswith(prefix_b):
                return items, False
            common = grouped(key)
            if common is not None:
                if len(items) == limit:
                    return items, True
                items.append(common.decode("utf-8"))
                successor = key_successor(common)
                if successor is None:
                    return items, False
                cursor, inclusive, jumped = successor, True, True
                break
            if not add_versions(key, head_hlc, None):
                return items, True
            cursor, inclusive = key, False
        if not jumped and len(rows) < batch:
            return items, False


def _upgrade(c):
    """Bring a data dir made by an older z4node up to SCHEMA."""
    columns = {row[1] for row in c.execute("PRAGMA table_info(versions)")}
    if "stamp" not in columns:
        c.execute("ALTER TABLE versions ADD COLUMN stamp INTEGER")
    if c.execute("SELECT 1 FROM node_settings WHERE name=?",
                 (merkle.BUILT_SETTING,)).fetchone() is None:
        # A data dir from before the trees: build them, in one transaction.
        c.execute("BEGIN")
        merkle.build(c)
        c.execute("COMMIT")
    if c.execute("SELECT 1 FROM node_settings WHERE name=?",
                 (usage.BUILT_SETTING,)).fetchone() is None:
        c.execute("BEGIN")
        usage.build(c)
        c.execute("COMMIT")


def _require_bucket(c, bucket):
    """BucketMissing unless ``bucket`` is live, checked in the write's own
    transaction: a write that began before a DeleteBucket and commits
    after it must not land in the deleted bucket (it would leak its chunk
    references, and reappear when the name is created again)."""
    if live_bucket_owner(c, bucket) is None:
        raise BucketMissing(bucket)


def live_bucket_owner(c, bucket):
    """The owner of ``bucket`` if it is live (not deleted), else None (in a
    transaction)."""
    row = c.execute("SELECT owner, deleted FROM buckets WHERE name=?", (bucket,)).fetchone()
    return row[0] if row is not None and not row[1] else None


def _current_head(c, bucket, key):
    """The live head's record, for preconditions: its inline bytes are not
    read (``inline`` is None), so a damaged body never blocks overwriting
    or deleting it."""
    kb = key.encode("utf-8")
    row = c.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=? AND"
        " hlc=(SELECT hlc FROM heads WHERE bucket=? AND key=? AND deleted=0)",
        (bucket, kb, bucket, kb)).fetchone()
    return _version_from_row(bucket, kb, row, None) if row else None


def _latest(c, bucket, key, at_rest):
    kb = key.encode("utf-8")
    row = c.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=? AND"
        " hlc=(SELECT hlc FROM heads WHERE bucket=? AND key=?)",
        (bucket, kb, bucket, kb)).fetchone()
    return _version_from_row(bucket, kb, row, at_rest) if row else None


def _version_by_id(c, bucket, key, version_id, hlc=None, at_rest=None):
    """One version by id; its inline bytes are opened only with ``at_rest``
    (None: not read, for records whose body nobody will serve)."""
    kb = key.encode("utf-8")
    if hlc is not None:
        row = c.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=?"
            " AND hlc=? AND version_id=?", (bucket, kb, hlc, version_id)).fetchone()
    else:
        row = c.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=?"
            " AND version_id=? ORDER BY hlc DESC LIMIT 1",
            (bucket, kb, version_id)).fetchone()
    return _version_from_row(bucket, kb, row, at_rest) if row else None


def _install_version(c, version, now, at_rest):
    """Insert a version, replacing the one with the same version id, and move
    the head if it is newer (last writer wins by HLC). Inline bytes are
    sealed here, inside the transaction, with the current node key."""
    kb = version.key.encode("utf-8")
    replaced = [_version_from_row(version.bucket, kb, row, None) for row in c.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=? AND"
        " version_id=?", (version.bucket, kb, version.version_id)).fetchall()]
    for old in replaced:
        _add_refs(c, old.chunks, -1, now)
        c.execute("DELETE FROM versions WHERE bucket=? AND key=? AND hlc=?",
                  (version.bucket, kb, old.hlc))
    c.execute("INSERT INTO versions (bucket, key, hlc, version_id, delete_marker, size,"
              " etag, owner, meta, chunks, inline, stamp)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              (version.bucket, kb, version.hlc, version.version_id,
               int(version.delete_marker), version.size, version.etag,
               version.owner, json.dumps(version.meta, sort_keys=True),
               pack_chunks(version.chunks) if version.chunks else None,
               None if version.inline is None else at_rest.seal_inline(version.inline),
               version.stamp))
    _add_refs(c, version.chunks, +1, now)
    c.execute(
        "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (bucket, key) DO UPDATE SET hlc=excluded.hlc,"
        " deleted=excluded.deleted, size=excluded.size, etag=excluded.etag,"
        " owner=excluded.owner WHERE excluded.hlc > heads.hlc",
        (version.bucket, kb, version.hlc, int(version.delete_marker),
         version.size, version.etag, version.owner))
    if any(old.hlc > version.hlc for old in replaced):
        # The replaced version was newer than its replacement (a replica's
        # late write): the head may have pointed at it; point it at
        # whatever is newest now.
        _refresh_head(c, version.bucket, kb)
    return replaced[0] if replaced else None


def _remove_version(c, version, now):
    kb = version.key.encode("utf-8")
    c.execute("DELETE FROM versions WHERE bucket=? AND key=? AND hlc=?",
              (version.bucket, kb, version.hlc))
    _add_refs(c, version.chunks, -1, now)
    _refresh_head(c, version.bucket, kb)


def _refresh_head(c, bucket, kb):
    """Point the key's head at its newest remaining version (none: no head)."""
    row = c.execute(
        "SELECT hlc, delete_marker, size, etag, owner FROM versions WHERE bucket=?"
        " AND key=? ORDER BY hlc DESC LIMIT 1", (bucket, kb)).fetchone()
    if row is None:
        c.execute("DELETE FROM heads WHERE bucket=? AND key=?", (bucket, kb))
    else:
        # An upsert, not INSERT OR REPLACE: the usage triggers must see the
        # old head go (z4node.storage.usage).
        c.execute("INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?)"
                  " ON CONFLICT (bucket, key) DO UPDATE SET hlc=excluded.hlc,"
                  " deleted=excluded.deleted, size=excluded.size, etag=excluded.etag,"
                  " owner=excluded.owner", (bucket, kb, *row))


def _add_refs(c, chunks, delta, now):
    for digest, count in Counter(h for h, _ in chunks).items():
        change = delta * count
        c.execute(
            "INSERT INTO chunks VALUES (?, ?, ?) ON CONFLICT (hash) DO UPDATE"
            " SET refs = refs + excluded.refs,"
            " zero_since = CASE WHEN refs + excluded.refs <= 0 THEN ? ELSE NULL END",
            (digest, change, now if change <= 0 else None, now))


def _get_upload(c, upload_id):
    row = c.execute("SELECT upload_id, bucket, key, hlc, owner, meta FROM uploads"
                    " WHERE upload_id=?", (upload_id,)).fetchone()
    if row is None:
        return None
    u, b, k, h, o, m = row
    return Upload(u, b, k.decode("utf-8"), h, o, json.loads(m))


def _part_from_row(row):
    number, etag, size, chunks, hlc, meta = row
    return Part(number, etag, size, unpack_chunks(chunks), hlc, json.loads(meta))
