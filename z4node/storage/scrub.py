"""Scrubbing: re-reading every chunk file and checking it against its name.

Owns the crawler that finds bit rot before a reader does (Tahoe-LAFS's
crawlers are the model). It walks the chunk directories in order, one leaf
directory at a time, and reads each chunk through the chunk store, which
verifies it against its BLAKE3 name (and, in an encrypted data dir, its
authentication tag) and sets a bad copy aside as ``.corrupted`` -- never
deletes it. It reads at most ``rate`` bytes a second, so foreground
requests keep the disk; it keeps its cursor in the metadata store after
each directory, so a restart resumes the pass instead of starting over;
and a new pass starts no sooner than ``pass_interval`` after the last one
started (the whole store at most once a month by default).

A bad chunk is healed through ``heal(digest)`` (in a cluster, the
replicated chunk manager's :meth:`~z4node.replication.chunks.ReplicatedChunks.heal`:
a verified copy fetched from another node and stored in its place). One
that cannot be healed (no other node has a good copy, or a single node)
counts as unrecoverable and is logged loudly with the objects and upload
parts that use it. The crawler survives its own errors: a failed step is
logged and counted, and it carries on after ``retry_delay``.
"""

import json

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from z4node.storage.chunks import ChunkCorrupted, ChunkMissing

SETTING = "scrub"
MB = 1000 * 1000


class Scrubber(Service):
    log = Logger()

    # Gentle by default: 8 MB/s reads a 1 TB store in about a day and a
    # half, and leaves the disk to clients; the pass interval keeps it to
    # once a month.
    default_rate = 8 * MB  # bytes per second
    default_pass_interval = 30 * 24 * 3600.0  # seconds
    retry_delay = 60.0  # seconds after a failed step
    # How many users of a bad chunk are named in its log line.
    users_named = 20

    def __init__(self, clock, meta, chunks, rate=None, pass_interval=None):
        self._clock = clock
        self._meta = meta
        self._chunks = chunks
        self.rate = self.default_rate if rate is None else rate
        self.pass_interval = (self.default_pass_interval if pass_interval is None
                              else pass_interval)
        self.state = {"cursor": None, "pass_started": None, "last_pass_finished": None,
                      "paused": False, "bytes_verified": 0, "chunks_verified": 0,
                      "bad_found": 0, "healed": 0, "unrecoverable": 0, "failures": 0,
                      "passes": 0}
        self._wake = None
        self._running = None
        # Replaces this node's bad copy of a chunk with a good one from
        # elsewhere (awaitable; ChunkMissing when there is none). Alone,
        # there is nowhere to fetch one from; in a cluster the node sets
        # ReplicatedChunks.heal.
        self.heal = _nowhere

    # -- control ---------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        self._running = Deferred.fromCoroutine(self._crawl())
        self._running.addErrback(lambda f: f.trap(CancelledError))

    def stopService(self):
        Service.stopService(self)
        if self._running is not None:
            self._running.cancel()
            self._running = None

    async def start_now(self):
        """Resume, and begin a pass now if none is running (``z4 scrub start``)."""
        self.state["paused"] = False
        if self.state["cursor"] is None:
            self._begin_pass()
        await self._save()
        self._nudge()

    async def pause(self):
        """Stop reading until :meth:`start_now`; the cursor is kept."""
        self.state["paused"] = True
        await self._save()
        self._nudge()

    def counters(self):
        """The counts only (chunks and bytes verified, bad found, healed,
        unrecoverable, failed steps, passes), for metrics."""
        return {name: self.state[name] for name in (
            "bytes_verified", "chunks_verified", "bad_found", "healed", "unrecoverable",
            "failures", "passes")}

    def status(self):
        return dict(self.state, rate=round(self.rate), pass_interval=self.pass_interval,
                    running=self.running and not self.state["paused"])

    # -- the crawl -------------------------------------------------------------

    async def _crawl(self):
        saved = await self._meta.get_setting(SETTING)
        if saved:
            self.state.update(json.loads(saved))
        while True:
            try:
                await self._step()
            except CancelledError:
                raise
            except Exception:
                self.state["failures"] += 1
                self.log.failure("scrub: a step failed; it carries on in {delay} s",
                                 delay=self.retry_delay)
                await self._sleep(self.retry_delay)

    async def _step(self):
        """Scrub one directory, or wait for the next pass or a resume."""
        if self.state["paused"]:
            await self._sleep(None)
            return
        if self.state["cursor"] is None:
            due = (self.state["pass_started"] or 0) + self.pass_interval
            wait = due - self._clock.seconds()
            if wait > 0 and self.state["pass_started"] is not None:
                await self._sleep(wait)
                return
            self._begin_pass()
            await self._save()
        cursor = self.state["cursor"]
        directory = await self._chunks.run(
            lambda: next(self._chunks.leaf_directories(cursor), None))
        if directory is None:
            self.state.update(cursor=None, last_pass_finished=self._clock.seconds())
            self.state["passes"] += 1
            self.log.info("scrub: pass done; {n} chunks verified so far, {bad} bad",
                          n=self.state["chunks_verified"], bad=self.state["bad_found"])
            await self._save()
            return
        files = await self._chunks.run(lambda: list(self._chunks.stored_hashes(directory)))
        for digest, _, _ in files:
            if digest is None:
                continue  # a temp file of a write under way
            await self._verify(digest)
            if self.state["paused"] or not self.running:
                return  # the directory is done again on resume
        self.state["cursor"] = directory
        await self._save()

    def _begin_pass(self):
        self.state.update(cursor="", pass_started=self._clock.seconds())

    async def _verify(self, digest):
        try:
            data = await self._chunks.get_chunk(digest)
        except ChunkMissing:
            return  # collected meanwhile
        except ChunkCorrupted as e:
            self.state["bad_found"] += 1
            await self._heal(digest, e)
            return
        self.state["bytes_verified"] += len(data)
        self.state["chunks_verified"] += 1
        await self._sleep(len(data) / self.rate)

    async def _heal(self, digest, error):
        try:
            await self.heal(digest)
        except ChunkMissing:
            self.state["unrecoverable"] += 1
            users = await self._meta.chunk_users(digest, self.users_named)
            named = ", ".join(users) if users else "no object or upload part on this node"
            self.log.error("scrub: chunk {hash} is damaged ({why}) and no node has a good "
                           "copy; set aside as .corrupted; used by: {users}",
                           hash=digest.hex(), why=str(error), users=named)
            return
        self.state["healed"] += 1
        self.log.warn("scrub: chunk {hash} was damaged ({why}); set aside as .corrupted "
                      "and replaced by a good copy from another node",
                      hash=digest.hex(), why=str(error))

    # -- waiting -----------------------------------------------------------------

    async def _sleep(self, seconds):
        """Wait ``seconds`` (None: until nudged); :meth:`_nudge` ends it early."""
        self._wake = Deferred()
        timer = None
        if seconds is not None:
            timer = self._clock.callLater(seconds, self._nudge)
        try:
            await self._wake
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    def _nudge(self):
        wake, self._wake = self._wake, None
        if wake is not None and not wake.called:
            wake.callback(None)

    def _save(self):
        return self._meta.set_setting(SETTING, json.dumps(self.state, sort_keys=True))


async def _nowhere(digest):
    raise ChunkMissing(digest.hex())
