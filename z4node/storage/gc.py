"""Garbage collection of chunks and tombstones.

A chunk whose reference count fell to zero is deleted only after a grace
period, and only if its file was not touched meanwhile (every write of the
same content touches it), and never while an upload in progress has it
pinned. Files with no row at all (left by a crash between writing a chunk
and committing its version) and stray temp files are swept after the same
grace period: a sweep walks the chunk directories one at a time, a bounded
number of files per pass, so its memory stays flat however many chunks
there are. Delete markers and the tombstones of deleted versions are
dropped after their own, longer grace, so an old replica has time to learn
of the delete before it is forgotten. In a cluster of several nodes no
chunk file is deleted yet: references are counted where the versions are,
not on the chunks' owners, and cluster-wide collection is still to come. In
an encrypted data dir the same sweep drops the key rows of chunk files that
were never renamed into place (a crash between the two), a batch a sweep.
"""

import os

from twisted.application.service import Service
from twisted.internet.defer import Deferred
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

    # Whether chunk files may be deleted now (the node turns it off while
    # it is in a cluster of several: see Node).
    deletes_chunks = staticmethod(lambda: True)

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

    def startService(self):
        super().startService()
        self.job.start(self.interval_seconds)

    def stopService(self):
        super().stopService()
        self.job.stop()

    def status(self):
        """Passes run and failed, and whether chunks are deleted, for
        ``/_z4/status``."""
        return {**self.job.status(), "deletes_chunks": self.deletes_chunks()}

    async def _collect(self):
        now = self._clock.seconds()
        cutoff = now - self.chunk_grace_seconds
        deleted = 0
        while self.deletes_chunks():
            candidates = await self._meta.unreferenced_chunks(cutoff, self.batch)
            candidates = [h for h in candidates if not self._chunks.is_pinned(h)]
            if not candidates:
                break
            for digest in await self._meta.forget_chunks(candidates):
                if not self._chunks.is_pinned(digest):
                    if await self._chunks.delete_chunk(digest, untouched_since=cutoff):
                        deleted += 1
            if len(candidates) < self.batch:
                break
        if self._sweep_cursor is None and now >= self._sweep_due and self.deletes_chunks():
            self._sweep_due = now + self.chunk_grace_seconds
            self._sweep_cursor = ""
        if self._sweep_cursor is not None and self.deletes_chunks():
            deleted += await self._sweep_orphans(cutoff)
        older = hlclib.from_seconds(now - self.tombstone_grace_seconds)
        tombstones = await self._meta.collect_tombstones(older, self.batch)
        if deleted or tombstones:
            self.log.info("gc: deleted {chunks} chunks, {tombstones} tombstones",
                          chunks=deleted, tombstones=tombstones)
        return deleted, tombstones

    def collect(self):
        return Deferred.fromCoroutine(self._collect())

    async def _sweep_orphans(self, cutoff):
        """Carry the sweep on through the chunk directories, for up to
        sweep_files_per_pass files: delete chunk files without a row, and
        temp files, older than cutoff."""
        deleted = 0
        budget = self.sweep_files_per_pass
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
            deleted += await self._sweep_directory(files, cutoff)
            self._sweep_cursor = directory
        return deleted

    async def _sweep_directory(self, files, cutoff):
        stale = [(d, p) for d, p, mtime in files if mtime < cutoff]
        temps = [p for d, p in stale if d is None]
        if temps:
            await self._chunks.run(_unlink_all, temps)
        digests = [d for d, p in stale if d is not None]
        deleted = len(temps)
        for start in range(0, len(digests), self.batch):
            batch = digests[start:start + self.batch]
            known = await self._meta.known_chunks(batch)
            for digest in batch:
                if digest not in known and not self._chunks.is_pinned(digest):
                    if await self._chunks.delete_chunk(digest, untouched_since=cutoff):
                        deleted += 1
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
