"""ObjectService: the S3 object model over the replicated tables and the
replicated chunks: buckets and their settings, object versions
(versioning, delete markers, object lock, tags), copies, listings and
multipart uploads.

It never parses HTTP and never touches a file or a peer: bytes arrive and
leave as async iterables, records go to the bucket's owners through
``ObjectTables``, chunks to theirs through ``ReplicatedChunks`` (DESIGN.md,
"The paths of a request"). A single node is a cluster of one through the
same code. A write is acknowledged (its coroutine returns) only after a
write quorum of owners holds its chunks and its record durably.

Checks that decide a write (preconditions, Object Lock, the part list of
a completion) run here, in the coordinator, against a quorum read of the
current state, while this node holds the key's lock: two writes of one key
through the same node are serialized; two through different nodes are
decided by their timestamps, the newer wins (docs/cluster.md).
"""

import copy
import hashlib
import json
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass

from twisted.internet.defer import DeferredLock

from z4node.objects import checksums, encryption, lock, streams, versioning
from z4node.objects.errors import ObjectError
from z4node.objects.system import valid_bucket_name
from z4node.objects.tables import ObjectTables
from z4node.objects.versioning import NULL_VERSION
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.errors import QuorumNotReached
from z4node.replication.solo import SoloCluster
from z4node.storage.meta import Part, RecordCorrupted, Upload, Version, VersionTombstone
from z4node.storage.object_records import EndedUpload, ObjectRecords

# S3's minimum size for every part of a multipart upload but the last.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10000


def _parts_digest(requested):
    """A digest of a CompleteMultipartUpload's part list, to tell a retry
    of a completion from a different one."""
    normal = [[number, etag.strip('"').lower(), sorted(claimed.items())]
              for number, etag, claimed in requested]
    return hashlib.sha256(json.dumps(normal).encode("utf-8")).digest()


class KeyLocks:
    """One lock per (bucket, key) in use, dropped when nobody holds or waits
    for it."""

    def __init__(self):
        self._locks = {}

    @asynccontextmanager
    async def held(self, bucket, key):
        name = (bucket, key)
        entry = self._locks.get(name)
        if entry is None:
            entry = self._locks[name] = [DeferredLock(), 0]
        entry[1] += 1
        await entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[name]


@dataclass
class Deletion:
    """What a DeleteObject did: the version id it removed or the delete
    marker it wrote (None in a never-versioned bucket), and whether that
    version is a delete marker."""

    version_id: str | None
    delete_marker: bool


class ObjectService:
    # The length of a lifecycle "day" (x-amz-expiration is computed with
    # it); only the test-only lifecycle setting changes it.
    lifecycle_day_seconds = 24 * 3600
    # Settings every new bucket starts with (the node's options, such as
    # --block-public-access-default); a request's own settings win.
    default_bucket_settings = {}
    # The ObjectOwnership of a bucket created without one (the node's
    # --object-ownership): ACLs on, as Ceph RGW and MinIO have them.
    default_ownership = "ObjectWriter"
    # The node's objects.kms.KeyManager, which opens SSE-KMS objects.
    kms = None

    # Rounds a new version in a never-versioned bucket is stamped again at
    # most when an owner holds a newer one (see _commit).
    restamps = 3

    def __init__(self, clock, meta, chunks, system, hlc, random_bytes=os.urandom):
        self._clock = clock
        self._meta = meta
        self._store = chunks
        self.records = ObjectRecords(meta, clock)
        self.system = system
        self._hlc = hlc
        self._random_bytes = random_bytes
        self._key_locks = KeyLocks()
        self.replicate_with(SoloCluster())

    def replicate_with(self, cluster, handoff=None):
        """Keep objects on their owners in ``cluster`` (a ClusterService),
        with hints for owners that are down through ``handoff`` (a
        HintedHandoff); until this is called the node is a cluster of one."""
        self.cluster = cluster
        self._chunks = ReplicatedChunks(self._store, cluster, handoff)
        self.tables = ObjectTables(self.records, cluster, handoff)

    @property
    def chunk_manager(self):
        """The ReplicatedChunks that objects' chunks go through."""
        return self._chunks

    def is_first_owner(self, bucket):
        """Whether this node comes first among the bucket's owners (the one
        that runs its background work, such as lifecycle rules)."""
        return self.tables.owners(bucket)[0] == self.cluster.local.id

    async def _unavailable(self, bucket, error):
        """The ObjectError for a write or read that too few owners took:
        NoSuchBucket if the bucket went meanwhile (its owners refuse it),
        else ServiceUnavailable."""
        if self.system.bucket(bucket) is None:
            return ObjectError("NoSuchBucket")
        return ObjectError("ServiceUnavailable", f"Too few of the bucket's nodes answered "
                           f"({error}); try again.")

    async def _read(self, bucket, read):
        try:
            return await read
        except QuorumNotReached as e:
            raise await self._unavailable(bucket, e) from None

    async def _commit(self, record, restamp=False):
        """Write a Version or VersionTombstone to the bucket's owners.

        With ``restamp`` (a new version in a bucket that never had
        versioning, where every version of a key is the one slot
        ``null``): if an owner holds a newer edit of that slot, stamped by
        a clock ahead of this node's, the version is stamped past it and
        written again, so that it is the newest, as a write that began
        after that one was acknowledged must be. That costs a second round
        only when clocks disagree, where reading the newest before every
        write would cost one each time."""
        try:
            took = await self.tables.write_version(record)
            for _ in range(self.restamps):
                if took or not restamp:
                    break
                edited = await self.tables.edited(record.bucket, record.key, record.version_id)
                if edited is not None:
                    self._hlc.observe(edited)
                record.hlc = self._hlc.now()
                took = await self.tables.write_version(record)
        except QuorumNotReached as e:
            raise await self._unavailable(record.bucket, e) from None

    async def _latest(self, bucket, key):
        return await self._read(bucket, self.tables.latest(bucket, key))

    async def _newest(self, bucket, key):
        """The key's newest version (or None), with this node's clock moved
        past its stamp. Versions are ordered by HLC (last writer wins), and
        another node's clock may run ahead of this one's (a node restarted
        starts up to 5 s ahead): a new version stamped without looking
        would lose to one already acknowledged. Read from a quorum, the
        newest acknowledged version is always seen."""
        latest = await self._latest(bucket, key)
        if latest is not None:
            self._hlc.observe(latest.edited)
        return latest

    async def _before_new_version(self, target, key):
        """In a bucket that has had versioning, move the clock past the
        key's newest version before a new one is stamped (see
        :meth:`_newest`); in one that never had, the write itself tells
        (:meth:`_commit` with ``restamp``)."""
        if versioning.status(target) is not None:
            try:
                await self._newest(target.name, key)
            except RecordCorrupted:
                pass  # a damaged record must not keep a new version out

    async def _live_head(self, bucket, key):
        """The newest version of key unless it is a delete marker (what a
        precondition is checked against)."""
        latest = await self._latest(bucket, key)
        return None if latest is None or latest.delete_marker else latest

    async def _install(self, version, precondition=None):
        """Make ``version`` key's newest version, if ``precondition(current
        live head or None)`` allows and Object Lock does not protect a
        version it overwrites in place (the ``null`` version). Called
        with the key's lock held."""
        if precondition is not None:
            precondition(await self._live_head(version.bucket, version.key))
        # Only a bucket with Object Lock can hold a protected version (and
        # only then is the record read: its body may be unreadable).
        target = self.system.bucket(version.bucket)
        if version.version_id == NULL_VERSION and target is not None and lock.enabled(target):
            replaced = await self._read(version.bucket, self.tables.version(
                version.bucket, version.key, NULL_VERSION))
            if replaced is not None:
                lock.check_removable(replaced, self._clock.seconds())
        await self._commit(version, restamp=target is not None
                           and versioning.status(target) is None)

    @property
    def encrypts_at_rest(self):
        """Whether every object is sealed under the node key (SSE-S3)."""
        return self._meta.at_rest.encrypted

    def sealing_for(self, version, customer_key):
        """The SSE-C or SSE-KMS sealing a read of ``version`` needs (None if
        it is neither); ObjectError if ``customer_key`` (or its absence)
        does not fit."""
        return encryption.sealing_for(version.meta, customer_key, self._open_kms_key)

    def _open_kms_key(self, kms_key_id):
        if self.kms is None:
            raise ObjectError("InternalError", "This node has no key manager.")
        return self.kms.open_key(kms_key_id)

    async def kms_request(self, reference, context=None, bucket_key=False):
        """The KmsRequest for a write naming KMS key ``reference`` (see
        ``objects.kms.KeyManager.request``)."""
        if self.kms is None:
            raise ObjectError("NotImplemented", "This node has no key manager.")
        return await self.kms.request(reference, context, bucket_key)

    def _part_sealing(self, upload, customer_key):
        return encryption.part_sealing(upload.meta, customer_key, self._open_kms_key)

    # -- buckets -------------------------------------------------------------

    def bucket(self, name):
        bucket = self.system.bucket(name)
        if bucket is None:
            raise ObjectError("NoSuchBucket")
        return bucket

    async def create_bucket(self, name, owner_key, settings=None, object_lock=False):
        """A new bucket with ``settings``; with ``object_lock`` it has
        Object Lock enabled, and so versioning, for good."""
        if not valid_bucket_name(name):
            raise ObjectError("InvalidBucketName")
        existing = self.system.bucket(name)
        if existing is not None:
            if existing.owner == owner_key.user_id:
                raise ObjectError("BucketAlreadyOwnedByYou")
            raise ObjectError("BucketAlreadyExists")
        settings = {**copy.deepcopy(self.default_bucket_settings), **(settings or {})}
        settings.setdefault("ownership", self.default_ownership)
        if object_lock:
            settings.update({"versioning": versioning.ENABLED,
                             "object_lock": {"enabled": True}})
        return await self.system.create_bucket(name, owner_key, settings)

    async def update_bucket_settings(self, name, update):
        """Change a bucket's settings: ``update(settings)`` changes them in
        place (see SystemTables.update_bucket_settings)."""
        self.bucket(name)
        return await self.system.update_bucket_settings(name, update)

    async def set_bucket_setting(self, name, setting, value):
        """Set one bucket setting (None removes it)."""
        def update(settings):
            if value is None:
                settings.pop(setting, None)
            else:
                settings[setting] = value
        return await self.update_bucket_settings(name, update)

    async def set_versioning(self, name, status):
        """PutBucketVersioning: ``Enabled`` or ``Suspended``."""
        def update(settings):
            if status != versioning.ENABLED and settings.get("object_lock", {}).get("enabled"):
                raise ObjectError("InvalidBucketState", "An Object Lock configuration is "
                                  "present on this bucket, so the versioning state cannot "
                                  "be changed.")
            settings["versioning"] = status
        return await self.update_bucket_settings(name, update)

    async def delete_bucket(self, name):
        bucket = self.bucket(name)
        now = self._clock.seconds()
        meta = self._meta
        versioned = versioning.status(bucket) is not None
        # Asked of the bucket's owners first (this node may hold none of
        # it), then of this node's copy in the tombstone's transaction.
        keys, _ = await self._read(name, self.tables.list_heads(name, "", None, None, 1))
        if keys:
            raise ObjectError("BucketNotEmpty")
        if versioned:
            versions, _ = await self._read(name, self.tables.list_versions(
                name, "", None, None, None, None, 1))
            if versions:
                raise ObjectError("BucketNotEmpty")

        def must_be_empty(c):
            if meta.bucket_has_objects(c, name) or (
                    versioned and meta.bucket_has_versions(c, name)):
                raise ObjectError("BucketNotEmpty")
            meta.purge_bucket_contents(c, name, now)

        await self.system.delete_bucket(name, must_be_empty)

    # -- objects -------------------------------------------------------------

    async def head_object(self, bucket, key, version_id=None):
        """The latest version of key, or the one named by ``version_id``.

        The latest being a delete marker is NoSuchKey; a version id naming a
        delete marker is MethodNotAllowed, as in S3; either error carries
        the marker (its id goes back to the client).
        """
        self.bucket(bucket)
        if version_id is None:
            version = await self._latest(bucket, key)
            if version is None:
                raise ObjectError("NoSuchKey")
            if version.delete_marker:
                raise ObjectError("NoSuchKey", version=version)
            return version
        version = await self.get_version(bucket, key, version_id)
        if version.delete_marker:
            raise ObjectError("MethodNotAllowed", "The specified method is not allowed "
                              "against this resource.", version=version)
        return version

    async def get_version(self, bucket, key, version_id):
        """The version named by ``version_id`` (delete markers included);
        NoSuchVersion if there is none."""
        hlc = versioning.version_hlc(version_id)
        version = await self._read(bucket, self.tables.version(bucket, key, version_id, hlc))
        if version is None:
            raise ObjectError("NoSuchVersion")
        return version

    def _new_version(self, bucket, key, hlc=None, **fields):
        """A Version of key with the id the bucket's versioning state gives
        (on the reactor thread: the HLC is not thread-safe)."""
        hlc = self._hlc.now() if hlc is None else hlc
        if versioning.status(bucket) == versioning.ENABLED:
            version_id = versioning.new_version_id(hlc, self._random_bytes)
        else:
            version_id = NULL_VERSION
        return Version(bucket.name, key, hlc, version_id, **fields)

    def _version_meta(self, bucket, meta, now=None):
        """The stored metadata of a new version: lock settings checked
        against the bucket and its default retention applied."""
        if not lock.enabled(bucket):
            if meta.get("retention") or "legal_hold" in meta:
                raise ObjectError("InvalidRequest",
                                  "Bucket is missing Object Lock Configuration")
            return meta
        return lock.with_default_retention(
            bucket, meta, self._clock.seconds() if now is None else now)

    async def put_object(self, bucket, key, body, *, owner, meta, hashers=(),
                         verify=None, precondition=None, customer_key=None, kms=None):
        """Store ``body`` as the new version of key, SSE-C encrypted with
        ``customer_key`` or SSE-KMS with ``kms`` (a KmsRequest) if given.

        ``verify(stored)`` is called once the whole body is stored and
        before anything is committed; it raises to refuse the object (a
        checksum or signature that did not match). ``precondition(current)``
        runs inside the commit with the current version or None.
        """
        target = self.bucket(bucket)
        # Refused before a byte is stored (lock settings on a bucket without
        # Object Lock); applied after verify, which may add to ``meta``.
        self._version_meta(target, meta)
        record = sealing = None
        if (kms or customer_key) is not None:
            record, sealing = encryption.new_record(kms or customer_key)
        try:
            stored = await streams.store_body(self._chunks, body, hashers, sealing=sealing)
        except QuorumNotReached as e:
            raise await self._unavailable(bucket, e) from None
        try:
            if verify is not None:
                verify(stored)
            # After verify, which may record checksums in ``meta``.
            meta = encryption.with_record(meta, record)
            async with self._key_locks.held(bucket, key):
                target = self.bucket(bucket)
                meta = self._version_meta(target, meta)
                etag = sealing.etag(stored.md5) if sealing else stored.md5.hex()
                await self._before_new_version(target, key)
                version = self._new_version(
                    target, key, delete_marker=False, size=stored.size, etag=etag,
                    owner=owner, meta=meta, chunks=stored.chunks, inline=stored.inline)
                await self._install(version, precondition)
        finally:
            streams.release(self._chunks, stored.chunks)
        return version

    async def copy_object(self, source, bucket, key, *, owner, meta, precondition=None,
                          source_sealing=None, customer_key=None, kms=None):
        """A new version of key with the bytes of ``source``: no byte is
        copied, the new record points at the same chunks -- unless either
        side is SSE-C or SSE-KMS (``source_sealing`` opens the source,
        ``customer_key`` or ``kms`` seals the copy), which takes a copy of
        the bytes sealed anew."""
        target = self.bucket(bucket)
        if source_sealing is not None or (kms or customer_key) is not None:
            body = self.read(source, 0, source.size - 1, source_sealing)
            return await self.put_object(bucket, key, body, owner=owner, meta=meta,
                                         precondition=precondition,
                                         customer_key=customer_key, kms=kms)
        meta = encryption.with_record(meta, None)
        meta = self._version_meta(target, meta)
        streams.pin_version(self._chunks, source)
        try:
            async with self._key_locks.held(bucket, key):
                await self._before_new_version(target, key)
                version = self._new_version(
                    target, key, delete_marker=False, size=source.size, etag=source.etag,
                    owner=owner, meta=meta, chunks=list(source.chunks), inline=source.inline)
                await self._install(version, precondition)
        finally:
            streams.release(self._chunks, source.chunks)
        return version

    def read(self, version, start, end, sealing=None):
        """An async iterator over bytes start..end (inclusive) of version;
        an SSE-C version needs its ``sealing`` (see :meth:`sealing_for`)."""
        return streams.read_range(self._chunks, version, start, end, sealing)

    async def open_read(self, version, start, end, sealing=None):
        """:meth:`read`, its first chunk read and verified before it returns:
        unreadable data at the start is ObjectError("InternalError") here,
        while an answer can still say so."""
        return await streams.open_range(self._chunks, version, start, end, sealing)

    async def delete_object(self, bucket, key, owner, version_id=None,
                            bypass_governance=False, precondition=None,
                            only_noncurrent=False):
        """DeleteObject. Without a version id: a delete marker (in a
        never-versioned bucket, a tombstone only over a live object). With
        one: that version is removed for good, unless Object Lock protects
        it (or, with ``only_noncurrent``, it is the newest). Returns a
        :class:`Deletion`."""
        target = self.bucket(bucket)
        async with self._key_locks.held(bucket, key):
            if version_id is not None:
                return await self._delete_version(bucket, key, version_id, bypass_governance,
                                                  precondition, only_noncurrent)
            state = versioning.status(target)
            latest = await self._newest(bucket, key)
            marker = self._new_version(target, key, delete_marker=True, size=0, etag="",
                                       owner=owner, meta={}, chunks=[], inline=None)
            current = None if latest is None or latest.delete_marker else latest
            if precondition is not None:
                precondition(current)
            # A never-versioned bucket gets a marker only over a live object
            # (there it is a tombstone); otherwise always, as S3 does.
            if state is not None or current is not None:
                await self._install(marker)
        if state is None:
            return Deletion(None, False)
        return Deletion(marker.version_id, True)

    async def _delete_version(self, bucket, key, version_id, bypass_governance,
                              precondition, only_noncurrent):
        hlc = versioning.version_hlc(version_id)
        version = await self._read(bucket, self.tables.version(bucket, key, version_id, hlc))
        if version is None:
            return Deletion(version_id, False)
        if only_noncurrent:
            latest = await self._latest(bucket, key)
            if latest is not None and latest.version_id == version_id:
                return Deletion(version_id, False)
        self._check_removal(version, self._clock.seconds(), bypass_governance, precondition)
        # The tombstone must be newer than the version's last edit.
        self._hlc.observe(version.edited)
        await self._commit(VersionTombstone(bucket, key, version_id, version.hlc,
                                            self._hlc.now()))
        return Deletion(version_id, version.delete_marker)

    @staticmethod
    def _check_removal(version, now, bypass_governance, precondition):
        lock.check_removable(version, now, bypass_governance)
        if precondition is not None:
            precondition(version)

    async def list_objects(self, bucket, prefix, delimiter, after, limit):
        self.bucket(bucket)
        return await self._read(bucket, self.tables.list_heads(bucket, prefix, delimiter,
                                                               after, limit))

    async def list_versions(self, bucket, prefix, delimiter, key_marker,
                            version_id_marker, limit):
        """One page of ListObjectVersions: ``(items, truncated)``, items
        ``(Version, is_latest)`` or a common prefix (str)."""
        self.bucket(bucket)
        marker_hlc = None
        if version_id_marker is not None:
            if key_marker is None:
                raise ObjectError("InvalidArgument", "A version-id marker cannot be "
                                  "specified without a key marker.",
                                  argument=("version-id-marker", version_id_marker))
            marker_hlc = versioning.version_hlc(version_id_marker)
        return await self._read(bucket, self.tables.list_versions(
            bucket, prefix, delimiter, key_marker, version_id_marker, marker_hlc, limit))

    # -- per-version metadata: tags, retention, legal hold ---------------------

    async def update_version_meta(self, bucket, key, version_id, change):
        """Rewrite the metadata of key's latest version (or the one
        ``version_id`` names) in place: ``change(version)`` returns the new
        meta dict, inside the write. Its bytes, ETag and Last-Modified stay."""
        self.bucket(bucket)
        async with self._key_locks.held(bucket, key):
            if version_id is None:
                version = await self._latest(bucket, key)
                if version is None or version.delete_marker:
                    raise ObjectError("NoSuchKey", version=version)
            else:
                hlc = versioning.version_hlc(version_id)
                version = await self._read(bucket, self.tables.version(bucket, key,
                                                                       version_id, hlc))
                if version is None:
                    raise ObjectError("NoSuchVersion")
            if version.delete_marker:
                raise ObjectError("MethodNotAllowed", "The specified method is not "
                                  "allowed against this resource.", version=version)
            version.meta = change(version)
            # A new edit stamp, newer than the last: replicas tell the
            # newer edit by it.
            self._hlc.observe(version.edited)
            version.stamp = self._hlc.now()
            await self._commit(version)
        return version

    async def set_tags(self, bucket, key, version_id, tags):
        """Replace a version's tag set (an empty dict removes every tag)."""
        def change(version):
            meta = dict(version.meta)
            if tags:
                meta["tags"] = dict(tags)
            else:
                meta.pop("tags", None)
            return meta
        return await self.update_version_meta(bucket, key, version_id, change)

    def _require_lock(self, bucket):
        target = self.bucket(bucket)
        if not lock.enabled(target):
            raise ObjectError("InvalidRequest", "Bucket is missing Object Lock Configuration")
        return target

    async def set_retention(self, bucket, key, version_id, retention,
                            bypass_governance=False):
        """PutObjectRetention: ``retention`` is ``(mode, until)`` or None."""
        self._require_lock(bucket)
        now = self._clock.seconds()

        def change(version):
            lock.check_retention_change(version, retention, now, bypass_governance)
            meta = dict(version.meta)
            if retention is None:
                meta.pop("retention", None)
            else:
                meta["retention"] = {"mode": retention[0], "until": retention[1]}
            return meta
        return await self.update_version_meta(bucket, key, version_id, change)

    async def set_legal_hold(self, bucket, key, version_id, on):
        self._require_lock(bucket)

        def change(version):
            # OFF is kept (not dropped): GetObjectLegalHold then answers OFF
            # rather than "no legal hold was ever set".
            meta = dict(version.meta)
            meta["legal_hold"] = bool(on)
            return meta
        return await self.update_version_meta(bucket, key, version_id, change)

    async def lock_protected_version(self, bucket, key, version_id):
        """The version whose retention or legal hold is asked for; the
        bucket must have Object Lock."""
        self._require_lock(bucket)
        if version_id is None:
            return await self.head_object(bucket, key)
        return await self.head_object(bucket, key, version_id)

    # -- multipart uploads ---------------------------------------------------

    async def create_upload(self, bucket, key, *, owner, meta, customer_key=None, kms=None):
        target = self.bucket(bucket)
        if not lock.enabled(target) and (meta.get("retention") or "legal_hold" in meta):
            raise ObjectError("InvalidRequest", "Bucket is missing Object Lock Configuration")
        record = None
        if (kms or customer_key) is not None:
            record, _ = encryption.new_record(kms or customer_key)
        meta = encryption.with_record(meta, record)
        # Hex: an id starting with "-" (possible in base64) is taken for an
        # option by command-line tools such as the aws CLI.
        upload_id = self._random_bytes(24).hex()
        upload = Upload(upload_id, bucket, key, self._hlc.now(), owner, meta)
        try:
            await self.tables.write_upload(upload)
        except QuorumNotReached as e:
            raise await self._unavailable(bucket, e) from None
        return upload

    async def get_upload(self, bucket, key, upload_id):
        self.bucket(bucket)
        upload = await self._read(bucket, self.tables.upload(bucket, upload_id))
        if not isinstance(upload, Upload) or upload.key != key:
            raise ObjectError("NoSuchUpload")
        return upload

    async def _store_part(self, upload, part):
        try:
            await self.tables.write_part(upload, part)
        except QuorumNotReached as e:
            if isinstance(await self._read(upload.bucket, self.tables.upload(
                    upload.bucket, upload.upload_id)), EndedUpload):
                raise ObjectError("NoSuchUpload") from None
            raise await self._unavailable(upload.bucket, e) from None

    async def upload_part(self, bucket, key, upload_id, part_number, body, *,
                          hashers=(), verify=None, meta=None, customer_key=None):
        """Store one part; ``verify(stored)`` as for put_object; an SSE-C
        upload's parts need its ``customer_key``."""
        # Parts of one number are ordered by when their upload began (see
        # MetaStore.put_part), not by when their last byte came.
        began = self._hlc.now()
        upload = await self.get_upload(bucket, key, upload_id)
        sealing = self._part_sealing(upload, customer_key)
        try:
            stored = await streams.store_body(self._chunks, body, hashers, inline_limit=-1,
                                              sealing=sealing)
        except QuorumNotReached as e:
            raise await self._unavailable(bucket, e) from None
        try:
            if verify is not None:
                verify(stored)
            etag = sealing.etag(stored.md5) if sealing else stored.md5.hex()
            part = Part(part_number, etag, stored.size, stored.chunks, began, meta or {})
            await self._store_part(upload, part)
        finally:
            streams.release(self._chunks, stored.chunks)
        return part

    async def copy_part(self, bucket, key, upload_id, part_number, source, start, end,
                        source_sealing=None, customer_key=None):
        """UploadPartCopy: a part made of bytes start..end of source
        (opened with ``source_sealing`` if SSE-C; sealed with the upload's
        ``customer_key`` if the upload is SSE-C).

        A whole object that was not itself assembled from parts is copied
        by reference, like CopyObject: its ETag is the MD5 of its bytes, so
        none need reading. Anything else -- and anything SSE-C on either
        side -- is read and stored again (its chunks deduplicate where they
        line up).
        """
        upload = await self.get_upload(bucket, key, upload_id)
        # Refuse a key that does not fit before reading a byte.
        sealing = self._part_sealing(upload, customer_key)
        setting = upload.meta.get("checksum")
        whole = (start, end) == (0, source.size - 1)
        by_reference = (whole and source.inline is None and "parts" not in source.meta
                        and source_sealing is None and sealing is None
                        and (setting is None or setting["algorithm"] in source.meta.get(
                            "checksums", {})))
        if by_reference:
            streams.pin_version(self._chunks, source)
            try:
                part_meta = {}
                if setting is not None:
                    algorithm = setting["algorithm"]
                    part_meta["checksums"] = {algorithm: source.meta["checksums"][algorithm]}
                part = Part(part_number, source.etag, source.size, list(source.chunks),
                            self._hlc.now(), part_meta)
                await self._store_part(upload, part)
            finally:
                streams.release(self._chunks, source.chunks)
            return part
        hashers, part_meta = [], {}
        if setting is not None:
            checksum = checksums.new_checksum(setting["algorithm"])
            hashers.append(checksum)

        def record(stored):
            if setting is not None:
                part_meta["checksums"] = {setting["algorithm"]: checksum.b64()}

        return await self.upload_part(bucket, key, upload_id, part_number,
                                      self.read(source, start, end, source_sealing),
                                      hashers=hashers, verify=record, meta=part_meta,
                                      customer_key=customer_key)

    async def list_parts(self, bucket, key, upload_id, after_part, limit):
        upload = await self.get_upload(bucket, key, upload_id)
        parts = await self._read(bucket, self.tables.parts(bucket, upload_id, after_part,
                                                           limit + 1))
        return upload, parts[:limit], limit > 0 and len(parts) > limit

    async def _all_parts(self, bucket, upload_id):
        parts = []
        while True:
            page = await self._read(bucket, self.tables.parts(
                bucket, upload_id, parts[-1].part_number if parts else 0, 1000))
            parts += page
            if len(page) < 1000:
                return parts

    async def list_uploads(self, bucket, prefix, delimiter, key_marker, upload_id_marker, limit):
        self.bucket(bucket)
        return await self._read(bucket, self.tables.list_uploads(
            bucket, prefix, delimiter, key_marker, upload_id_marker, limit))

    async def complete_upload(self, bucket, key, upload_id, requested, *,
                              owner, precondition=None, expected_checksum=None,
                              customer_key=None):
        """Assemble the parts named in ``requested`` ([(number, etag,
        {algorithm: checksum})]) in order into the new version of key;
        unnamed parts are dropped. An upload created with a checksum
        algorithm gets the object checksum S3 would compute (composite or
        full-object); ``expected_checksum``, if given, must equal it. An
        SSE-C key, optional here, must be the upload's if given.

        A retry of a completion that succeeded, with the same part list,
        returns the version it made (an SDK retries after a timeout and
        must not be told NoSuchUpload for an upload that succeeded)."""
        digest = _parts_digest(requested)
        upload, done = await self._upload_or_completion(bucket, key, upload_id, digest)
        if done is not None:
            return done
        if customer_key is not None:
            self._part_sealing(upload, customer_key)
        target = self.bucket(bucket)
        await self._before_new_version(target, key)
        template = self._new_version(target, key, delete_marker=False, size=0, etag="",
                                     owner=owner, meta={}, chunks=[], inline=None)
        now = self._clock.seconds()

        def build(upload, parts):
            by_number = {p.part_number: p for p in parts}
            chosen = []
            previous = 0
            for number, etag, claimed in requested:
                if number <= previous:
                    raise ObjectError("InvalidPartOrder")
                previous = number
                part = by_number.get(number)
                if part is None or part.etag != etag.strip('"').lower():
                    raise ObjectError("InvalidPart")
                stored = part.meta.get("checksums", {})
                for algorithm, value in claimed.items():
                    if stored.get(algorithm) != value:
                        raise ObjectError("InvalidPart", f"The {algorithm} checksum of "
                                          f"part {number} does not match the uploaded part.")
                chosen.append(part)
            for part in chosen[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise ObjectError("EntityTooSmall")
            digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen))
            meta = self._version_meta(target, dict(upload.meta), now)
            meta["parts"] = [p.size for p in chosen]
            setting = upload.meta.get("checksum")
            if setting is not None:
                algorithm, kind = setting["algorithm"], setting["type"]
                values = [p.meta.get("checksums", {}).get(algorithm) for p in chosen]
                if None in values:
                    raise ObjectError("InvalidPart", f"A part has no {algorithm} checksum.")
                value = checksums.multipart_checksum(
                    algorithm, kind, list(zip(values, meta["parts"])))
                if expected_checksum is not None and expected_checksum != (algorithm, value):
                    raise ObjectError("BadDigest", f"The {expected_checksum[0]} you specified "
                                      "did not match the calculated checksum.")
                meta["checksums"] = {algorithm: value}
                meta["checksum_type"] = kind
                meta["part_checksums"] = values
            template.size = sum(p.size for p in chosen)
            template.etag = f"{digest.hexdigest()}-{len(chosen)}"
            template.meta = meta
            template.chunks = [c for p in chosen for c in p.chunks]
            return template

        async with self._key_locks.held(bucket, key):
            # Again under the lock: a completion that overtook this one has
            # ended it.
            upload, done = await self._upload_or_completion(bucket, key, upload_id, digest)
            if done is not None:
                return done
            version = build(upload, await self._all_parts(bucket, upload_id))
            await self._install(version, precondition)
            await self._end_upload(EndedUpload(upload_id, bucket, key, digest,
                                               version.version_id, version.hlc))
        return version

    async def _end_upload(self, ended):
        try:
            await self.tables.write_upload(ended)
        except QuorumNotReached as e:
            raise await self._unavailable(ended.bucket, e) from None

    async def _upload_or_completion(self, bucket, key, upload_id, digest):
        """``(the open upload, None)``, or ``(None, the version)`` a
        completion with the same part list made of an upload that ended;
        NoSuchUpload otherwise."""
        try:
            return await self.get_upload(bucket, key, upload_id), None
        except ObjectError as e:
            if e.code != "NoSuchUpload":
                raise
        return None, await self._completed_before(bucket, key, upload_id, digest)

    async def _completed_before(self, bucket, key, upload_id, digest):
        """The version a completion of ``upload_id`` with the same part
        list made, if it is remembered and still there; else NoSuchUpload."""
        record = await self._read(bucket, self.tables.upload(bucket, upload_id))
        if not isinstance(record, EndedUpload) or record.aborted or (
                record.key, record.parts) != (key, digest):
            raise ObjectError("NoSuchUpload")
        version = await self._read(bucket, self.tables.version(
            bucket, key, record.version_id, record.hlc))
        if version is None:
            raise ObjectError("NoSuchUpload")
        return version

    async def abort_upload(self, bucket, key, upload_id):
        upload = await self.get_upload(bucket, key, upload_id)
        await self._end_upload(EndedUpload(upload_id, bucket, key, b"", "", upload.hlc))
