"""This node's replica of the object tables: versions (with the tombstones
of versions deleted by id), multipart uploads and their parts.

Owns applying a replicated entry to the local SQLite tables and reading
entries back for the coordinators (``z4node.objects.tables``). Every apply
merges: an entry older than what is stored changes nothing, so applying
one twice, or an old one after a new one, is harmless, and replicas that
receive the same entries in any order end up equal.

- A version is replaced only by a copy with a newer edit stamp
  (:attr:`Version.edited`); a :class:`VersionTombstone` removes the
  version it names when it is newer, and stays to stop an older copy from
  coming back.
- An upload, once ended (completed or aborted), stays ended: its record
  and parts are dropped, and what it became is kept for a day so that a
  retried completion gets its answer. Of two different ends (an abort and
  a complete that raced through two nodes) the one with the later HLC
  stays; an abort is stamped with the upload's own HLC, so a complete
  always beats it.

Reference counts of chunks (the ``chunks`` table) move with what is
installed and removed here, as GC expects, and so do the Merkle trees of
the versions, uploads and parts (:mod:`z4node.storage.merkle`), in the same
transaction.
"""

import json
from dataclasses import dataclass

from twisted.internet.defer import succeed

from z4node.storage import merkle
from z4node.storage.meta import (
    _MISS, _VERSION_COLUMNS, CompletedUpload, UploadMissing, VersionTombstone, _add_refs,
    _get_upload, _install_version, _latest, _part_from_row, _remove_version,
    _require_bucket, _version_by_id, _version_from_row, list_heads, list_uploads,
    list_versions, pack_chunks, unpack_chunks)


@dataclass
class EndedUpload(CompletedUpload):
    """An upload that was completed (``version_id`` names what it became)
    or aborted (``version_id`` is empty)."""

    @property
    def aborted(self):
        return not self.version_id


class ObjectRecords:
    """The object tables of this node (see the module docstring); every
    method returns a Deferred."""

    # How long an ended upload is remembered. SDKs retry a timed-out
    # CompleteMultipartUpload within minutes; a day also covers a client
    # that resumes the next morning. A row is ~150 bytes.
    ended_upload_seconds = 24 * 3600

    def __init__(self, meta, clock):
        self._meta = meta
        self._clock = clock

    @property
    def _db(self):
        return self._meta.db

    def _write_key(self, bucket, key, fn):
        """A write that changes key's versions; the head cache forgets key
        when it completes, committed or not."""
        heads = self._meta.heads

        def forget(result):
            heads.forget((bucket, key))
            return result
        return self._db.write(fn).addBoth(forget)

    # -- versions ----------------------------------------------------------------

    def latest(self, bucket, key, with_tombstones=False):
        """``(newest version or None, tombstones)``: the newest version of
        key, a delete marker included, and (``with_tombstones``) the
        tombstones of versions at least as new, which a coordinator
        merging several replicas' answers needs."""
        at_rest = self._meta.at_rest
        heads, cache_key = self._meta.heads, (bucket, key)
        if not with_tombstones:
            cached = heads.get(cache_key)
            if cached is not _MISS:
                return succeed((cached, ()))
        else:
            cached = heads.get_with_tombstones(cache_key)
            if cached is not _MISS:
                return succeed(cached)
        generation = heads.generation

        def read(c):
            version = _latest(c, bucket, key, at_rest)
            if not with_tombstones:
                return version, None
            return version, _tombstones(c, bucket, key, version.hlc if version else 0)

        def fill(found):
            version, tombstones = found
            heads.fill(cache_key, version, generation, tombstones)
            return version, () if tombstones is None else tuple(tombstones)
        return self._db.read(read).addCallback(fill)

    def version(self, bucket, key, version_id, hlc=None):
        """The version of key named ``version_id`` (delete markers
        included), its VersionTombstone, or None."""
        at_rest = self._meta.at_rest

        def read(c):
            found = _version_by_id(c, bucket, key, version_id, hlc, at_rest)
            if found is not None:
                return found
            return _tombstone(c, bucket, key, version_id)
        return self._db.read(read)

    def apply_version(self, record):
        """Merge a Version or VersionTombstone; fires with whether it
        changed anything. BucketMissing if the bucket is not live here."""
        now = self._clock.seconds()
        at_rest = self._meta.at_rest

        def write(c):
            _require_bucket(c, record.bucket)
            kb = record.key.encode("utf-8")
            tombstone = _tombstone(c, record.bucket, record.key, record.version_id)
            if tombstone is not None and tombstone.stamp >= record.edited:
                return False
            stored = _version_by_id(c, record.bucket, record.key, record.version_id)
            if stored is not None and stored.edited >= record.edited:
                return False
            tombstoned = isinstance(record, VersionTombstone)
            merkle.change(c, record.bucket, kb, record.version_id,
                          (True, tombstone.stamp) if tombstone is not None
                          else None if stored is None else (False, stored.edited),
                          (tombstoned, record.edited))
            if tombstoned:
                if stored is not None:
                    _remove_version(c, stored, now)
                c.execute("INSERT OR REPLACE INTO version_tombstones VALUES (?, ?, ?, ?, ?)",
                          (record.bucket, kb, record.version_id, record.hlc, record.stamp))
                return True
            if tombstone is not None:
                c.execute("DELETE FROM version_tombstones WHERE bucket=? AND key=? AND"
                          " version_id=?", (record.bucket, kb, record.version_id))
            _install_version(c, record, now, at_rest)
            return True
        return self._write_key(record.bucket, record.key, write)

    def list_heads(self, bucket, prefix, delimiter, after, limit, with_deleted=False):
        """One page of keys; see :func:`z4node.storage.meta.list_heads`."""
        return self._db.read(list_heads, bucket, prefix, delimiter, after, limit,
                             with_deleted)

    def list_versions(self, bucket, prefix, delimiter, key_marker, version_id_marker,
                      marker_hlc, limit, with_tombstones=False):
        """``(items, truncated, tombstones)``: one page of versions (see
        :func:`z4node.storage.meta.list_versions`) and, with
        ``with_tombstones``, the tombstones among the page's keys."""
        def read(c):
            items, truncated = list_versions(c, bucket, prefix, delimiter, key_marker,
                                             version_id_marker, marker_hlc, limit)
            tombstones = []
            keys = [item[0].key for item in items if not isinstance(item, str)]
            if with_tombstones and keys:
                tombstones = [VersionTombstone(bucket, k.decode("utf-8"), v, h, s)
                              for k, v, h, s in c.execute(
                                  "SELECT key, version_id, hlc, stamp FROM version_tombstones"
                                  " WHERE bucket=? AND key>=? AND key<=?",
                                  (bucket, keys[0].encode("utf-8"),
                                   keys[-1].encode("utf-8")))]
            return items, truncated, tombstones
        return self._db.read(read)

    # -- multipart uploads ----------------------------------------------------------

    def upload(self, upload_id):
        """The Upload, its EndedUpload if it ended less than
        ``ended_upload_seconds`` ago, or None."""
        since = self._clock.seconds() - self.ended_upload_seconds

        def read(c):
            return _get_upload(c, upload_id) or _ended(c, upload_id, since)
        return self._db.read(read)

    def apply_upload(self, upload):
        """Record a new upload (unless it ended already); BucketMissing if
        the bucket is not live here."""
        def write(c):
            _require_bucket(c, upload.bucket)
            if _ended(c, upload.upload_id, None) is not None:
                return False
            return _insert_upload(c, upload)
        return self._db.write(write)

    def apply_part(self, upload, part):
        """Store a part of ``upload`` (recording the upload too if this
        replica missed it), replacing a part of the same number whose
        upload began earlier (``part.hlc``); a part that began before the
        stored one is dropped, so a client that gave up on a slow upload
        and sent the part again completes with the ETag of the retry.
        UploadMissing if the upload ended."""
        now = self._clock.seconds()

        def write(c):
            _require_bucket(c, upload.bucket)
            if _ended(c, upload.upload_id, None) is not None:
                raise UploadMissing(upload.upload_id)
            _insert_upload(c, upload)
            old = c.execute("SELECT chunks, hlc FROM parts WHERE upload_id=? AND"
                            " part_number=?", (upload.upload_id, part.part_number)).fetchone()
            if old is not None:
                if old[1] >= part.hlc:
                    return False
                _add_refs(c, unpack_chunks(old[0]), -1, now)
            merkle.part_changed(c, upload.bucket, upload.upload_id, part.part_number,
                                None if old is None else (False, old[1]), (False, part.hlc))
            c.execute("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (upload.upload_id, part.part_number, part.etag, part.size,
                       pack_chunks(part.chunks), part.hlc, json.dumps(part.meta)))
            _add_refs(c, part.chunks, +1, now)
            return True
        return self._db.write(write)

    def end_upload(self, ended):
        """Record that an upload ended (an EndedUpload): its record and
        parts go. Of two different ends (a complete and an abort that raced
        through two nodes) the later one stays, last writer wins as for
        every record, so that replicas converge; fires with whether this
        end is the one recorded now."""
        now = self._clock.seconds()
        meta = self._meta

        def write(c):
            known = _ended(c, ended.upload_id, None)
            if known is not None:
                if ended.hlc <= known.hlc:
                    return False
                merkle.upload_changed(c, ended.bucket, ended.upload_id, (True, known.hlc),
                                      (True, ended.hlc))
                c.execute("UPDATE completed_uploads SET key=?, parts=?, version_id=?, hlc=?"
                          " WHERE upload_id=?", (ended.key.encode("utf-8"), ended.parts,
                                                 ended.version_id, ended.hlc, ended.upload_id))
                return True
            live = c.execute("SELECT hlc FROM uploads WHERE upload_id=?",
                             (ended.upload_id,)).fetchone()
            for number, hlc in c.execute("SELECT part_number, hlc FROM parts"
                                         " WHERE upload_id=?", (ended.upload_id,)).fetchall():
                merkle.part_changed(c, ended.bucket, ended.upload_id, number, (False, hlc), None)
            meta._drop_upload(c, ended.upload_id, now)
            merkle.upload_changed(c, ended.bucket, ended.upload_id,
                                  None if live is None else (False, live[0]), (True, ended.hlc))
            forgotten = now - self.ended_upload_seconds
            for bucket, upload_id, hlc in c.execute(
                    "SELECT bucket, upload_id, hlc FROM completed_uploads WHERE completed<?",
                    (forgotten,)).fetchall():
                merkle.upload_changed(c, bucket, upload_id, (True, hlc), None)
            c.execute("DELETE FROM completed_uploads WHERE completed<?", (forgotten,))
            c.execute("INSERT INTO completed_uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (ended.upload_id, ended.bucket, ended.key.encode("utf-8"),
                       ended.parts, ended.version_id, ended.hlc, now))
            return True
        return self._db.write(write)

    def ended_uploads(self, upload_ids):
        """The subset of ``upload_ids`` that ended."""
        def read(c):
            return {u for u in upload_ids if _ended(c, u, None) is not None}
        return self._db.read(read)

    def parts(self, upload_id, after_part, limit):
        """Parts numbered above ``after_part``, at most ``limit``."""
        def read(c):
            return [_part_from_row(r) for r in c.execute(
                "SELECT part_number, etag, size, chunks, hlc, meta FROM parts"
                " WHERE upload_id=? AND part_number>? ORDER BY part_number LIMIT ?",
                (upload_id, after_part, limit))]
        return self._db.read(read)

    # -- the Merkle trees of the records, for anti-entropy -------------------

    def merkle_nodes(self, bucket, nodes, table="versions"):
        """``{node: hash}`` of one of the bucket's trees (0: empty):
        ``table`` is versions, uploads or parts."""
        return self._db.read(merkle.node_hashes, merkle.tree(bucket, table), nodes)

    def merkle_leaves(self, bucket, prefixes, table="versions"):
        """The leaves in those leaf buckets of one of the bucket's trees:
        ``[(key bytes, version_id, tombstone, stamp), ...]``."""
        return self._db.read(merkle.leaves, merkle.tree(bucket, table), prefixes)

    # -- a bucket's records whole, for moving them to new owners -------------

    def buckets_held(self):
        """The live buckets this node holds any object record of."""
        def read(c):
            return [row[0] for row in c.execute(
                "SELECT bucket FROM versions UNION SELECT bucket FROM version_tombstones"
                " UNION SELECT bucket FROM uploads UNION SELECT bucket FROM completed_uploads"
                " INTERSECT SELECT name FROM buckets WHERE deleted=0 ORDER BY 1")]
        return self._db.read(read)

    def versions_after(self, bucket, after, limit):
        """Up to ``limit`` versions of ``bucket`` (delete markers included)
        after ``after`` (a ``(key, hlc)`` cursor, or None), in key order."""
        at_rest = self._meta.at_rest

        def read(c):
            where, params = "", ()
            if after is not None:
                where, params = " AND (key, hlc) > (?, ?)", (after[0].encode("utf-8"), after[1])
            rows = c.execute(
                f"SELECT key, {_VERSION_COLUMNS} FROM versions WHERE bucket=?{where}"
                " ORDER BY key, hlc LIMIT ?", (bucket, *params, limit)).fetchall()
            return [_version_from_row(bucket, row[0], row[1:], at_rest) for row in rows]
        return self._db.read(read)

    def tombstones_after(self, bucket, after, limit):
        """Up to ``limit`` VersionTombstones of ``bucket`` after ``after``
        (a ``(key, version_id)`` cursor, or None)."""
        def read(c):
            where, params = "", ()
            if after is not None:
                where, params = " AND (key, version_id) > (?, ?)", (
                    after[0].encode("utf-8"), after[1])
            return [VersionTombstone(bucket, key.decode("utf-8"), version_id, hlc, stamp)
                    for key, version_id, hlc, stamp in c.execute(
                        "SELECT key, version_id, hlc, stamp FROM version_tombstones"
                        f" WHERE bucket=?{where} ORDER BY key, version_id LIMIT ?",
                        (bucket, *params, limit))]
        return self._db.read(read)

    def uploads_of(self, bucket):
        """Every open upload of ``bucket`` and every one ended and still
        remembered (as EndedUpload)."""
        def read(c):
            open_ = [_get_upload(c, u) for (u,) in c.execute(
                "SELECT upload_id FROM uploads WHERE bucket=? ORDER BY upload_id", (bucket,))]
            ended = [_ended(c, u, None) for (u,) in c.execute(
                "SELECT upload_id FROM completed_uploads WHERE bucket=? ORDER BY upload_id",
                (bucket,))]
            return open_ + ended
        return self._db.read(read)

    def list_uploads(self, bucket, prefix, delimiter, key_marker, upload_id_marker, limit):
        """One page of open uploads; see :func:`z4node.storage.meta.list_uploads`."""
        return self._db.read(list_uploads, bucket, prefix, delimiter, key_marker,
                             upload_id_marker, limit)


def _insert_upload(c, upload):
    """Record ``upload`` unless it is recorded; whether it was not."""
    if c.execute("INSERT OR IGNORE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                 (upload.upload_id, upload.bucket, upload.key.encode("utf-8"), upload.hlc,
                  upload.owner, json.dumps(upload.meta))).rowcount == 0:
        return False
    merkle.upload_changed(c, upload.bucket, upload.upload_id, None, (False, upload.hlc))
    return True


def _tombstone(c, bucket, key, version_id):
    row = c.execute("SELECT hlc, stamp FROM version_tombstones WHERE bucket=? AND key=?"
                    " AND version_id=?", (bucket, key.encode("utf-8"), version_id)).fetchone()
    return VersionTombstone(bucket, key, version_id, *row) if row else None


def _tombstones(c, bucket, key, from_hlc):
    return [VersionTombstone(bucket, key, v, h, s) for v, h, s in c.execute(
        "SELECT version_id, hlc, stamp FROM version_tombstones WHERE bucket=? AND key=?"
        " AND hlc>=?", (bucket, key.encode("utf-8"), from_hlc))]


def _ended(c, upload_id, since):
    row = c.execute("SELECT bucket, key, parts, version_id, hlc, completed FROM"
                    " completed_uploads WHERE upload_id=?", (upload_id,)).fetchone()
    if row is None or (since is not None and row[5] < since):
        return None
    bucket, key, parts, version_id, hlc, _ = row
    return EndedUpload(upload_id, bucket, key.decode("utf-8"), bytes(parts), version_id, hlc)

