"""The object layer's replicated tables: object versions, multipart
uploads and their parts, each partitioned by bucket (DESIGN.md, "Bucket
partition"), so that the R owners of one bucket answer every listing of it.

Owns the coordinator side of every object-record operation: entries
written to a bucket's owners by quorum (``PartitionedTable``), point reads
with read repair, and the reads that merge several owners' answers:

- the newest version of a key, where one owner's tombstone (a version
  deleted by its id) beats another owner's stale copy of that version;
- listings (keys, versions, uploads, parts), where each owner answers a
  page and the pages are merged: for each key the newest head wins, a
  delete marker hides a stale live key, and the page ends where the first
  truncated owner's page ends, so paging is exactly as on one node.

Entries cross the network as JSON: records from ``z4node.storage.meta``
encoded by this module. This node's copy is ``ObjectRecords``.
"""

import base64
import dataclasses
import heapq

from twisted.internet.defer import Deferred, FirstError, ensureDeferred, gatherResults
from twisted.logger import Logger

from z4node.cluster.channel import CallError, Reply
from z4node.cluster.ring import bucket_key
from z4node.replication.table import (
    LocalStore, PartitionedTable, Schema, ask_read_quorum, json_body, moving_from, read_json,
    response_json)
from z4node.storage.meta import (
    BucketMissing, ListEntry, Part, Upload, UploadMissing, Version, VersionTombstone)
from z4node.storage.object_records import EndedUpload


# -- entries: records as JSON ---------------------------------------------------

def version_entry(record):
    if record is None:
        return None
    if isinstance(record, VersionTombstone):
        return {"bucket": record.bucket, "key": record.key, "version_id": record.version_id,
                "hlc": record.hlc, "stamp": record.stamp, "tombstone": True}
    return {"bucket": record.bucket, "key": record.key, "version_id": record.version_id,
            "hlc": record.hlc, "stamp": record.edited, "marker": record.delete_marker,
            "size": record.size, "etag": record.etag, "owner": record.owner,
            "meta": record.meta, "chunks": [[h.hex(), n] for h, n in record.chunks],
            "inline": None if record.inline is None
            else base64.b64encode(record.inline).decode("ascii")}


def version_record(entry):
    """The Version or VersionTombstone an entry holds; ValueError if it is
    not one."""
    if entry is None:
        return None
    try:
        if entry.get("tombstone"):
            return VersionTombstone(str(entry["bucket"]), str(entry["key"]),
                                    str(entry["version_id"]), int(entry["hlc"]),
                                    int(entry["stamp"]))
        hlc, stamp = int(entry["hlc"]), int(entry["stamp"])
        inline = entry["inline"]
        return Version(str(entry["bucket"]), str(entry["key"]), hlc, str(entry["version_id"]),
                       bool(entry["marker"]), int(entry["size"]), str(entry["etag"]),
                       str(entry["owner"]), dict(entry["meta"]),
                       [(bytes.fromhex(h), int(n)) for h, n in entry["chunks"]],
                       None if inline is None else base64.b64decode(inline),
                       None if stamp == hlc else stamp)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"not a version entry: {e}") from None


def _latest_answer(answer):
    """A peer's answer to a read of the newest version: ``(version,
    tombstones, partial)``; ValueError if it is malformed."""
    try:
        return (version_record(answer["version"]),
                [version_record(entry) for entry in answer["tombstones"]],
                answer.get("partial") is True)
    except (KeyError, TypeError) as e:
        raise ValueError(f"not an answer to latest: {e}") from None


def upload_entry(record):
    if record is None:
        return None
    if isinstance(record, EndedUpload):
        return {"ended": True, "upload_id": record.upload_id, "bucket": record.bucket,
                "key": record.key, "parts": record.parts.hex(),
                "version_id": record.version_id, "hlc": record.hlc}
    return {"upload_id": record.upload_id, "bucket": record.bucket, "key": record.key,
            "hlc": record.hlc, "owner": record.owner, "meta": record.meta}


def upload_record(entry):
    if entry is None:
        return None
    try:
        if entry.get("ended"):
            return EndedUpload(str(entry["upload_id"]), str(entry["bucket"]),
                               str(entry["key"]), bytes.fromhex(entry["parts"]),
                               str(entry["version_id"]), int(entry["hlc"]))
        return Upload(str(entry["upload_id"]), str(entry["bucket"]), str(entry["key"]),
                      int(entry["hlc"]), str(entry["owner"]), dict(entry["meta"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"not an upload entry: {e}") from None


def part_entry(part):
    return {"number": part.part_number, "etag": part.etag, "size": part.size,
            "chunks": [[h.hex(), n] for h, n in part.chunks], "hlc": part.hlc,
            "meta": part.meta}


def part_record(entry):
    try:
        return Part(int(entry["number"]), str(entry["etag"]), int(entry["size"]),
                    [(bytes.fromhex(h), int(n)) for h, n in entry["chunks"]],
                    int(entry["hlc"]), dict(entry["meta"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"not a part entry: {e}") from None


def _list_entry(entry):
    return {"key": entry.key, "hlc": entry.hlc, "size": entry.size, "etag": entry.etag,
            "owner": entry.owner, "deleted": entry.deleted}


# -- the three tables ------------------------------------------------------------

class _VersionSchema(Schema):
    def partition(self, entry):
        return bucket_key(entry["bucket"])

    def sort_key(self, entry):
        return [entry["bucket"], entry["key"], entry["version_id"]]

    @staticmethod
    def hlc(entry):
        return entry["stamp"]


class _VersionStore(LocalStore):
    def __init__(self, records):
        self.records = records

    async def apply(self, entry):
        try:
            return await self.records.apply_version(version_record(entry))
        except BucketMissing:
            raise CallError("NoSuchBucket", entry.get("bucket", "")) from None

    async def get(self, partition, sort_key):
        bucket, key, version_id = sort_key
        return version_entry(await self.records.version(bucket, key, version_id))

    # The Merkle reads anti-entropy compares (z4node.replication.antientropy).

    def merkle_nodes(self, partition, nodes):
        return self.records.merkle_nodes(partition.decode("utf-8"), nodes)

    async def merkle_leaves(self, partition, prefixes):
        """``[(sort key, (stamp, tombstone)), ...]``: newer compares greater."""
        bucket = partition.decode("utf-8")
        return [([bucket, key.decode("utf-8"), version_id], (stamp, tombstone))
                for key, version_id, tombstone, stamp
                in await self.records.merkle_leaves(bucket, prefixes)]


class _UploadSchema(Schema):
    def partition(self, entry):
        return bucket_key(entry["bucket"])

    def sort_key(self, entry):
        return [entry["bucket"], entry["upload_id"]]

    @staticmethod
    def hlc(entry):
        # An upload's end beats the upload: ends are final.
        return (bool(entry.get("ended")), entry["hlc"])


class _UploadStore(LocalStore):
    def __init__(self, records):
        self.records = records

    async def apply(self, entry):
        record = upload_record(entry)
        try:
            if isinstance(record, EndedUpload):
                await self.records.end_upload(record)
            else:
                await self.records.apply_upload(record)
        except BucketMissing:
            raise CallError("NoSuchBucket", record.bucket) from None

    async def get(self, partition, sort_key):
        bucket, upload_id = sort_key
        record = await self.records.upload(upload_id)
        if record is None or record.bucket != bucket:
            return None
        return upload_entry(record)

    def merkle_nodes(self, partition, nodes):
        return self.records.merkle_nodes(partition.decode("utf-8"), nodes, "uploads")

    async def merkle_leaves(self, partition, prefixes):
        """``[(sort key, (ended, stamp)), ...]``: an end beats the upload."""
        bucket = partition.decode("utf-8")
        return [([bucket, upload_id.decode("utf-8")], (tombstone, stamp))
                for upload_id, _, tombstone, stamp
                in await self.records.merkle_leaves(bucket, prefixes, "uploads")]


class _PartSchema(Schema):
    def partition(self, entry):
        return bucket_key(entry["upload"]["bucket"])

    def sort_key(self, entry):
        return [entry["upload"]["bucket"], entry["upload"]["upload_id"],
                entry["part"]["number"]]

    @staticmethod
    def hlc(entry):
        return entry["part"]["hlc"]


class _PartStore(LocalStore):
    def __init__(self, records):
        self.records = records

    async def apply(self, entry):
        try:
            upload = upload_record(entry["upload"])
            part = part_record(entry["part"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a part entry: {e}") from None
        try:
            await self.records.apply_part(upload, part)
        except BucketMissing:
            raise CallError("NoSuchBucket", upload.bucket) from None
        except UploadMissing:
            raise CallError("NoSuchUpload", upload.upload_id) from None

    async def get(self, partition, sort_key):
        bucket, upload_id, number = sort_key
        parts = await self.records.parts(upload_id, number - 1, 1)
        if not parts or parts[0].part_number != number:
            return None
        upload = await self.records.upload(upload_id)
        return {"upload": upload_entry(upload), "part": part_entry(parts[0])}

    def merkle_nodes(self, partition, nodes):
        return self.records.merkle_nodes(partition.decode("utf-8"), nodes, "parts")

    async def merkle_leaves(self, partition, prefixes):
        """``[(sort key, (stamp,)), ...]``: a part begun later wins."""
        bucket = partition.decode("utf-8")
        return [([bucket, upload_id.decode("utf-8"), int(number)], (stamp,))
                for upload_id, number, _, stamp
                in await self.records.merkle_leaves(bucket, prefixes, "parts")]


# -- the coordinator ---------------------------------------------------------------

class ObjectTables:
    """Object records on their buckets' owners (see the module docstring).

    ``records`` is this node's ObjectRecords; ``cluster`` what the peer
    channel and the ring offer (ClusterService, or a cluster of one).
    Every read that needs more owners than answer raises QuorumNotReached.
    """

    log = Logger()

    def __init__(self, records, cluster, handoff=None):
        self._records = records
        self._cluster = cluster
        self.version_table = PartitionedTable("versions", _VersionSchema(),
                                              _VersionStore(records), cluster, handoff)
        self.upload_table = PartitionedTable("uploads", _UploadSchema(),
                                             _UploadStore(records), cluster, handoff)
        self.part_table = PartitionedTable("parts", _PartSchema(), _PartStore(records),
                                           cluster, handoff)
        for op, handler in (("latest", self._serve_latest), ("heads", self._serve_heads),
                            ("versions", self._serve_versions),
                            ("uploads", self._serve_uploads), ("parts", self._serve_parts),
                            ("ended", self._serve_ended)):
            cluster.serve(f"objects.{op}", handler)

    def owners(self, bucket):
        return self._cluster.owners(bucket_key(bucket), PartitionedTable.replication)

    # -- a bucket's partition whole (for moving it to new owners) ---------------

    def buckets_held(self):
        """The buckets this node holds records of."""
        return self._records.buckets_held()

    async def partitions_held(self):
        """The ring keys of the buckets this node holds records of."""
        return [bucket_key(bucket) for bucket in await self._records.buckets_held()]

    async def partition_entries(self, bucket, page=200):
        """Every record of ``bucket`` this node holds, as ``(table,
        entry)`` pairs, read a page at a time."""
        after = None
        while True:
            versions = await self._records.versions_after(bucket, after, page)
            for version in versions:
                yield self.version_table, version_entry(version)
            if len(versions) < page:
                break
            after = (versions[-1].key, versions[-1].hlc)
        after = None
        while True:
            tombstones = await self._records.tombstones_after(bucket, after, page)
            for tombstone in tombstones:
                yield self.version_table, version_entry(tombstone)
            if len(tombstones) < page:
                break
            after = (tombstones[-1].key, tombstones[-1].version_id)
        for upload in await self._records.uploads_of(bucket):
            yield self.upload_table, upload_entry(upload)
            if isinstance(upload, EndedUpload):
                continue
            number = 0
            while True:
                parts = await self._records.parts(upload.upload_id, number, page)
                for part in parts:
                    yield self.part_table, {"upload": upload_entry(upload),
                                            "part": part_entry(part)}
                if len(parts) < page:
                    break
                number = parts[-1].part_number

    def _solo(self, bucket, owners):
        """Whether this node is the bucket's only owner, now and in the
        ring any data is still moving from: one answer, no merge."""
        return owners == [self._cluster.local.id] and not moving_from(
            self._cluster, bucket_key(bucket), owners)

    async def _ask(self, bucket, owners, op, args, local, decode=None):
        """{member: answer} from a read quorum of the bucket's owners (and,
        while its data moves, of its previous owners: see
        :func:`~z4node.replication.table.ask_read_quorum`); ``local()``
        answers for this node without a call (a coroutine or a Deferred),
        and a peer's JSON answer is ``decode(answer)`` when given."""
        def ask(owner):
            if owner == self._cluster.local.id:
                return ensureDeferred(local())
            d = Deferred.fromCoroutine(self._cluster.call(
                owner, f"objects.{op}", {}, json_body(args))).addCallback(response_json)
            return d if decode is None else d.addCallback(decode)
        return await ask_read_quorum(self._cluster, bucket_key(bucket), owners, ask)

    # -- versions ----------------------------------------------------------------

    async def write_version(self, record):
        """Store a Version or VersionTombstone on the bucket's owners (a
        write quorum of them); QuorumNotReached if too few took it. Returns
        whether every owner of that quorum took it: False when one holds a
        newer edit of the same version (or its tombstone)."""
        return await self.version_table.write(version_entry(record))

    async def version(self, bucket, key, version_id, hlc=None):
        """The version named ``version_id`` (delete markers included) or
        None (never written, or deleted); ``hlc``, when the id tells it,
        makes the local lookup one index seek."""
        record = await self._slot(bucket, key, version_id, hlc)
        return None if isinstance(record, VersionTombstone) else record

    async def edited(self, bucket, key, version_id):
        """The newest edit stamp a read quorum holds for that version,
        its tombstone included; None if it was never written."""
        record = await self._slot(bucket, key, version_id)
        return None if record is None else record.edited

    async def _slot(self, bucket, key, version_id, hlc=None):
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            return await self._records.version(bucket, key, version_id, hlc)
        return version_record(await self.version_table.read(
            bucket_key(bucket), [bucket, key, version_id]))

    async def latest(self, bucket, key, digests=True):
        """The newest version of key, a delete marker included, or None.

        While this node is one of the owners asked, the others answer with
        a digest: their version without its inline body, which only a
        newer version than this node's needs. When a digest turns out the
        newest (this node missed a write), the key is read again, every
        answer whole (``digests`` False)."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            version, _ = await self._records.latest(bucket, key)
            return version
        digest = digests and self._cluster.local.id in owners
        # This node's answer is taken as records, not as the entries a
        # peer sends: no encoding of it and back.
        answers = await self._ask(
            bucket, owners, "latest", {"bucket": bucket, "key": key, "digest": digest},
            lambda: self._records.latest(bucket, key, with_tombstones=True).addCallback(
                lambda found: (*found, False)),
            _latest_answer)
        tombstones = {}
        candidates = {}
        partial = set()
        for owner, (version, held, digested) in answers.items():
            for tombstone in held:
                known = tombstones.get(tombstone.version_id)
                if known is None or tombstone.stamp > known.stamp:
                    tombstones[tombstone.version_id] = tombstone
            candidates[owner] = version
            if digested:
                partial.add(owner)

        def deleted_by(version):
            tombstone = tombstones.get(version.version_id)
            return tombstone if tombstone and tombstone.stamp >= version.edited else None
        live = [(owner, v) for owner, v in candidates.items()
                if v is not None and not deleted_by(v)]
        # Of equal versions, a whole one.
        newest_owner, newest = max(
            live, key=lambda item: (item[1].hlc, item[1].edited, item[0] not in partial),
            default=(None, None))
        if newest_owner in partial:
            return await self.latest(bucket, key, digests=False)
        for owner, version in candidates.items():
            if owner not in owners:
                continue  # a previous owner: its data is moving away
            # An owner still holding a deleted version gets the tombstone;
            # one without the newest version gets it.
            if version is not None and deleted_by(version):
                self.version_table.repair(owner, version_entry(deleted_by(version)))
            if newest is not None and (version is None or (version.hlc, version.edited) < (
                    newest.hlc, newest.edited) or deleted_by(version)):
                self.version_table.repair(owner, version_entry(newest))
        return newest

    async def _local_latest(self, bucket, key, digest=False):
        """This node's answer to a read of the newest version: with
        ``digest``, the version without its inline body (``partial``)."""
        version, tombstones = await self._records.latest(bucket, key, with_tombstones=True)
        partial = digest and version is not None and version.inline is not None
        if partial:
            version = dataclasses.replace(version, inline=None)
        return {"version": version_entry(version),
                "tombstones": [version_entry(t) for t in tombstones], "partial": partial}

    async def _serve_latest(self, peer_id, args, body):
        args = await read_json(body)
        try:
            return Reply({}, json_body(await self._local_latest(
                args["bucket"], args["key"], args.get("digest") is True)))
        except (KeyError, TypeError) as e:
            raise CallError("BadRequest", str(e)) from None

    # -- listings --------------------------------------------------------------------

    async def list_heads(self, bucket, prefix, delimiter, after, limit):
        """One page of live keys and common prefixes: ``(items, truncated)``
        as ``z4node.storage.meta.list_heads`` answers for one node."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            return await self._records.list_heads(bucket, prefix, delimiter, after, limit)
        while True:
            args = {"bucket": bucket, "prefix": prefix, "delimiter": delimiter,
                    "after": after, "limit": limit}
            answers = await self._ask(bucket, owners, "heads", args,
                                      lambda: self._local_heads(args))
            pages = {owner: ([item if isinstance(item, str) else ListEntry(**item)
                              for item in answer["items"]], answer["truncated"])
                     for owner, answer in answers.items()}
            items, truncated, bound = _merge_pages(pages.values(), _head_order, _newer_head)
            items = await self._settle(bucket, pages, items)
            visible = [i for i in items if isinstance(i, str) or not i.deleted]
            if len(visible) > limit:
                return visible[:limit], True
            if visible or not truncated:
                return visible, truncated
            # Only delete markers up to the bound: go on past them.
            after = bound if isinstance(bound, str) else bound.key

    async def _local_heads(self, args):
        items, truncated = await self._records.list_heads(
            args["bucket"], args["prefix"], args["delimiter"], args["after"], args["limit"],
            with_deleted=True)
        return {"items": [item if isinstance(item, str) else _list_entry(item)
                          for item in items], "truncated": truncated}

    async def _serve_heads(self, peer_id, args, body):
        args = await read_json(body)
        return Reply({}, json_body(await self._local_heads(args)))

    async def _settle(self, bucket, pages, items):
        """``items``, each key whose owners' heads disagreed replaced by what
        a quorum read of the key says (which also repairs the owners). A
        page alone cannot tell a key an owner missed from a version an
        owner missed the deletion of (a version deleted by id leaves no
        head), so the read, which weighs version tombstones, decides."""
        seen = [{item.key: item.hlc for item in page if not isinstance(item, str)}
                for page, _ in pages.values()]
        disagreed = [item.key for item in items if not isinstance(item, str) and any(
            keys.get(item.key) != item.hlc for keys in seen)]
        if not disagreed:
            return items
        try:
            newest = dict(zip(disagreed, await gatherResults(
                [Deferred.fromCoroutine(self.latest(bucket, key)) for key in disagreed],
                consumeErrors=True)))
        except FirstError as e:
            e.subFailure.raiseException()
        settled = []
        for item in items:
            version = None if isinstance(item, str) else newest.get(item.key, item)
            if version is item or isinstance(item, str):
                settled.append(item)
            elif version is not None:
                settled.append(ListEntry(item.key, version.hlc, version.size, version.etag,
                                         version.owner, version.delete_marker))
        return settled

    async def list_versions(self, bucket, prefix, delimiter, key_marker, version_id_marker,
                            marker_hlc, limit):
        """One page of versions: ``(items, truncated)`` as
        ``z4node.storage.meta.list_versions`` answers for one node."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            items, truncated, _ = await self._records.list_versions(
                bucket, prefix, delimiter, key_marker, version_id_marker, marker_hlc, limit)
            return items, truncated
        while True:
            args = {"bucket": bucket, "prefix": prefix, "delimiter": delimiter,
                    "key_marker": key_marker, "version_id_marker": version_id_marker,
                    "marker_hlc": marker_hlc, "limit": limit}
            answers = await self._ask(bucket, owners, "versions", args,
                                      lambda: self._local_versions(args))
            deleted = {}
            pages = []
            for answer in answers.values():
                for entry in answer["tombstones"]:
                    tombstone = version_record(entry)
                    name = (tombstone.key, tombstone.version_id)
                    deleted[name] = max(deleted.get(name, 0), tombstone.stamp)
                pages.append(([item if isinstance(item, str)
                               else (version_record(item[0]), item[1])
                               for item in answer["items"]], answer["truncated"]))
            items, truncated, bound = _merge_pages(pages, _version_order, _newer_version)
            visible = []
            latest_seen = set()
            for item in items:
                if isinstance(item, str):
                    visible.append(item)
                    continue
                version, said_latest = item
                if deleted.get((version.key, version.version_id), -1) >= version.edited:
                    continue
                first = version.key not in latest_seen
                latest_seen.add(version.key)
                visible.append((version, said_latest and first))
            if len(visible) > limit:
                return visible[:limit], True
            if visible or not truncated:
                return visible, truncated
            if isinstance(bound, str):
                key_marker, version_id_marker, marker_hlc = bound, None, None
            else:
                key_marker = bound[0].key
                version_id_marker, marker_hlc = bound[0].version_id, bound[0].hlc

    async def _local_versions(self, args):
        items, truncated, tombstones = await self._records.list_versions(
            args["bucket"], args["prefix"], args["delimiter"], args["key_marker"],
            args["version_id_marker"], args["marker_hlc"], args["limit"],
            with_tombstones=True)
        return {"items": [item if isinstance(item, str)
                          else [version_entry(item[0]), item[1]] for item in items],
                "truncated": truncated,
                "tombstones": [version_entry(t) for t in tombstones]}

    async def _serve_versions(self, peer_id, args, body):
        args = await read_json(body)
        return Reply({}, json_body(await self._local_versions(args)))

    # -- multipart uploads ---------------------------------------------------------

    async def write_upload(self, record):
        """Store an Upload or EndedUpload on the bucket's owners."""
        await self.upload_table.write(upload_entry(record))

    async def upload(self, bucket, upload_id):
        """The Upload, its EndedUpload (completed or aborted lately) or None."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            record = await self._records.upload(upload_id)
            return record if record is None or record.bucket == bucket else None
        return upload_record(await self.upload_table.read(bucket_key(bucket),
                                                     [bucket, upload_id]))

    async def write_part(self, upload, part):
        await self.part_table.write({"upload": upload_entry(upload), "part": part_entry(part)})

    async def parts(self, bucket, upload_id, after_part, limit):
        """Up to ``limit`` parts numbered above ``after_part``, the newest
        upload of each number."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            return await self._records.parts(upload_id, after_part, limit)
        args = {"upload_id": upload_id, "after": after_part, "limit": limit}
        answers = await self._ask(bucket, owners, "parts", args, lambda: self._local_parts(args))
        newest = {}
        for answer in answers.values():
            for entry in answer:
                part = part_record(entry)
                held = newest.get(part.part_number)
                if held is None or held.hlc < part.hlc:
                    newest[part.part_number] = part
        return [newest[n] for n in sorted(newest)][:limit]

    async def _local_parts(self, args):
        parts = await self._records.parts(args["upload_id"], args["after"], args["limit"])
        return [part_entry(p) for p in parts]

    async def _serve_parts(self, peer_id, args, body):
        args = await read_json(body)
        return Reply({}, json_body(await self._local_parts(args)))

    async def list_uploads(self, bucket, prefix, delimiter, key_marker, upload_id_marker,
                           limit):
        """One page of open uploads: ``(items, truncated)`` as
        ``z4node.storage.meta.list_uploads`` answers for one node."""
        owners = self.owners(bucket)
        if self._solo(bucket, owners):
            return await self._records.list_uploads(bucket, prefix, delimiter, key_marker,
                                                    upload_id_marker, limit)
        args = {"bucket": bucket, "prefix": prefix, "delimiter": delimiter,
                "key_marker": key_marker, "upload_id_marker": upload_id_marker,
                "limit": limit}
        answers = await self._ask(bucket, owners, "uploads", args,
                                  lambda: self._local_uploads(args))
        pages = [([item if isinstance(item, str) else upload_record(item)
                   for item in answer["items"]], answer["truncated"])
                 for answer in answers.values()]
        items, truncated, _ = _merge_pages(pages, _upload_order, lambda a, b: a)
        ids = [i.upload_id for i in items if not isinstance(i, str)]
        ended = set()
        if ids:
            ended_answers = await self._ask(bucket, owners, "ended", {"ids": ids},
                                            lambda: self._local_ended(ids))
            for answer in ended_answers.values():
                ended.update(answer)
        items = [i for i in items if isinstance(i, str) or i.upload_id not in ended]
        if len(items) > limit:
            return items[:limit], True
        return items, truncated

    async def _local_uploads(self, args):
        items, truncated = await self._records.list_uploads(
            args["bucket"], args["prefix"], args["delimiter"], args["key_marker"],
            args["upload_id_marker"], args["limit"])
        return {"items": [item if isinstance(item, str) else upload_entry(item)
                          for item in items], "truncated": truncated}

    async def _serve_uploads(self, peer_id, args, body):
        args = await read_json(body)
        return Reply({}, json_body(await self._local_uploads(args)))

    async def _local_ended(self, ids):
        return sorted(await self._records.ended_uploads(ids))

    async def _serve_ended(self, peer_id, args, body):
        args = await read_json(body)
        return Reply({}, json_body(await self._local_ended(list(args["ids"]))))

    def status(self):
        return {name: table.status() for name, table in (
            ("versions", self.version_table), ("uploads", self.upload_table),
            ("parts", self.part_table))}


# -- merging owners' pages -------------------------------------------------------------

def _merge_pages(pages, order, newer):
    """Merge sorted pages ``[(items, truncated)]`` from several owners into
    ``(items, truncated, bound)``: items in ``order``, one per order key
    (``newer(a, b)`` picks between two owners' copies), cut where the first
    truncated owner's page ends (``bound``, its last item): past it, that
    owner's items are unknown."""
    pages = list(pages)
    bound = None
    for items, truncated in pages:
        if truncated and items and (bound is None or order(items[-1]) < order(bound)):
            bound = items[-1]
    truncated = any(t for _, t in pages)
    merged = []
    for item in heapq.merge(*(items for items, _ in pages), key=order):
        if bound is not None and order(item) > order(bound):
            break
        if merged and order(merged[-1]) == order(item):
            # The same common prefix from two owners is one; entries merge.
            if not isinstance(item, str):
                merged[-1] = newer(merged[-1], item)
        else:
            merged.append(item)
    return merged, truncated, bound


def _head_order(item):
    return (item if isinstance(item, str) else item.key).encode("utf-8")


def _newer_head(a, b):
    return b if b.hlc > a.hlc else a


def _version_order(item):
    if isinstance(item, str):
        return (item.encode("utf-8"), 0, "")
    version = item[0]
    return (version.key.encode("utf-8"), -version.hlc, version.version_id)


def _newer_version(a, b):
    # The same version from two owners: the newer edit, latest if either says so.
    version = b[0] if b[0].edited > a[0].edited else a[0]
    return (version, a[1] or b[1])


def _upload_order(item):
    if isinstance(item, str):
        return (item.encode("utf-8"), "")
    return (item.key.encode("utf-8"), item.upload_id)

