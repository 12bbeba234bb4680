"""Garbage collection of chunks and tombstones.

A chunk no version or upload part on this node uses is deleted only after
a grace period, only if its file was not touched meanwhile (every write of
the same content touches it), never while an upload in progress has it
pinned, and only if no other node uses it either: the collector asks
``in_use`` (in a cluster, every member of the layout, through
:class:`z4node.replication.references.ChunkReferences`), and when that
answer is unknown (a member is down) it keeps the chunk and asks again at
the next sweep. Files with no row at all (left by a crash between writing a
chunk and committing its version, or held for versions on other nodes) and
stray temp files are swept after the same grace period: a sweep walks the
chunk directories one at a time, a bounded number of files per pass, so its
memory stays flat however many chunks there are. Delete markers and the
tombstones of deleted versions are dropped after their own, longer grace,
so an old replica has time to learn of the delete before it is forgotten.
In an encrypted data dir the same sweep drops the key rows of chunk files
that were never renamed into place (a crash between the two), a batch a
sweep.
"""

import os

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from z4node import hlc as hlclib
from z4node.periodic import PeriodicJob


class GarbageCollector(Service):
    # Unreferenced chunks wait this long (Garage waits 10 min too): long
    # enough for any upload that reuses the content to pin or touch it.
    chunk_grace_seconds = 10 * 60
    # Delete markers are kept a day so replicas that were away can see them.
    tombstone_grace_seconds = 24 * 3600
    interval_seconds = 60
    # Rows handled per step: keeps each step's transaction short.
    batch = 500
    # Chunk files the orphan sweep looks at per pass (one pass a minute);
    # a sweep that does not finish carries on at the next pass.
    sweep_files_per_pass = 20_000

    log = Logger()

    def __init__(self, clock, meta, chunks):
        self._clock = clock
        self._meta = meta
        self._chunks = chunks
        # A failed pass (a transient OSError, a busy disk) is logged and
        # counted, and the next pass comes on time.
        self.job = PeriodicJob("garbage collection", clock, self.collect)
        self._sweep_due = 0.0
        # The last chunk directory the running sweep finished; None when no
        # sweep is running.
        self._sweep_cursor = None
        self._key_cursor = b""
        # Passes never overlap: the periodic one and `z4 gc run` take turns.
        self._passes = DeferredLock()
        self.counters = {"chunks_deleted": 0, "bytes_freed": 0, "tombstones_dropped": 0}
        # Which of some chunk hashes are in use, on this node or another
        # (awaitable), or None when that is not known. Alone: this node's
        # references and pins; in a cluster the node sets
        # ChunkReferences.in_use, which asks every member.
        self.in_use = self._used_here

    def startService(self):
        super().startService()
        self.job.start(self.interval_seconds)

    def stopService(self):
        super().stopService()
        self.job.stop()

    def status(self):
        """Passes run and failed, and what they collected, for ``/_z4/status``."""
        return {**self.job.status(), **self.counters}

    async def _collect(self, sweep_now=False):
        now = self._clock.seconds()
        cutoff = now - self.chunk_grace_seconds
        deleted = 0
        while True:
            candidates = await self._meta.unreferenced_chunks(cutoff, self.batch)
            candidates = [h for h in candidates if not self._chunks.is_pinned(h)]
            if not candidates:
                break
            forgotten = await self._meta.forget_chunks(candidates)
            # Often the versions' node does not hold their chunks (they
            # live on the chunks' owners): ask about files it has only.
            stored = await self._chunks.run(
                lambda: [h for h in forgotten if os.path.exists(self._chunks.path(h))])
            deleted += await self._delete_unused(stored, cutoff)
            if len(candidates) < self.batch:
                break
        if self._sweep_cursor is None and (now >= self._sweep_due or sweep_now):
            self._sweep_due = now + self.chunk_grace_seconds
            self._sweep_cursor = ""
        if self._sweep_cursor is not None:
            deleted += await self._sweep_orphans(cutoff)
        older = hlclib.from_seconds(now - self.tombstone_grace_seconds)
        tombstones = await self._meta.collect_tombstones(older, self.batch)
        self.counters["tombstones_dropped"] += tombstones
        if deleted or tombstones:
            self.log.info("gc: deleted {chunks} chunks, {tombstones} tombstones",
                          chunks=deleted, tombstones=tombstones)
        return deleted, tombstones

    async def _delete_unused(self, digests, cutoff):
        """Delete the files of ``digests``, which no version on this node
        used, unless another node uses them, or something here pinned or
        used them meanwhile; returns how many it deleted."""
        digests = [h for h in digests if not self._chunks.is_pinned(h)]
        if not digests:
            return 0
        used = await self.in_use(digests)
        if used is None:
            return 0  # unknown: the next sweep asks again
        deleted = 0
        for digest in digests:
            if digest in used or self._chunks.is_pinned(digest):
                continue
            size = await self._chunks.delete_chunk(digest, untouched_since=cutoff)
            if size is not None:
                deleted += 1
                self.counters["chunks_deleted"] += 1
                self.counters["bytes_freed"] += size
        return deleted

    def collect(self, sweep_now=False):
        """One pass (after any pass under way): fires with (chunk files,
        tombstones) deleted. ``sweep_now`` starts a sweep of the chunk
        files if none is under way, even if one ran less than a grace
        period ago (``z4 gc run``)."""
        return self._passes.run(lambda: Deferred.fromCoroutine(self._collect(sweep_now)))

    async def _used_here(self, hashes):
        used = await self._meta.referenced_chunks(hashes)
        return used | {h for h in hashes if self._chunks.is_pinned(h)}

    async def _sweep_orphans(self, cutoff):
        """Carry the sweep on through the chunk directories, for up to
        sweep_files_per_pass files: delete chunk files without a row, and
        temp files, older than cutoff. The chunk files are asked about a
        batch at a time, across directories: in a cluster each batch costs
        a call to every other member."""
        deleted = 0
        budget = self.sweep_files_per_pass
        unknown = []
        while budget > 0:
            directory = await self._chunks.run(
                lambda: next(self._chunks.leaf_directories(self._sweep_cursor), None))
            if directory is None:
                self._sweep_cursor = None
                if self._chunks.encrypted:
                    await self._sweep_stale_keys()
                break
            files = await self._chunks.run(
                lambda: list(self._chunks.stored_hashes(directory)))
            budget -= len(files)
            stale = [(d, p) for d, p, mtime in files if mtime < cutoff]
            temps = [p for d, p in stale if d is None]
            if temps:
                await self._chunks.run(_unlink_all, temps)
                deleted += len(temps)
            digests = [d for d, p in stale if d is not None]
            known = await self._meta.known_chunks(digests) if digests else set()
            unknown += [d for d in digests if d not in known]
            self._sweep_cursor = directory
            while len(unknown) >= self.batch:
                deleted += await self._delete_unused(unknown[:self.batch], cutoff)
                del unknown[:self.batch]
        deleted += await self._delete_unused(unknown, cutoff)
        return deleted

    async def _sweep_stale_keys(self):
        """One batch of key rows without a chunk row or a file; a cursor
        walks the table across sweeps and wraps around at its end."""
        candidates = await self._meta.keys_without_chunk_rows(self._key_cursor, self.batch)
        self._key_cursor = candidates[-1] if len(candidates) == self.batch else b""
        for digest in candidates:
            if not self._chunks.is_pinned(digest):
                await self._chunks.drop_key_without_file(digest)


def _unlink_all(paths):
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
