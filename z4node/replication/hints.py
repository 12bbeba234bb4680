"""Hinted handoff: the copies a coordinator could not place on an owner
that was down, held by another node until that owner is back (DESIGN.md,
"The paths of a request"; Dynamo section 4.6).

Owns both sides of it:

- **Hand-off** (on the coordinator): when a chunk put or a table write
  finds a true owner down (membership says so) or unreachable (its call
  failed without an answer), the copy goes to a *holder*: the first live
  node after the owners in the key's ring order, or, when every node is an
  owner (a cluster of three), the first live owner other than the target.
  The holder keeps it in its persistent queue
  (:class:`~z4node.storage.hint_store.HintStore`) with the target's id.
  Hand-off runs beside the write and never counts toward its quorum: a
  write is acknowledged by W true owners or not at all. At most
  ``max_pending_bytes`` of chunk data wait for a holder at once; past that
  a hint is skipped (and counted), and anti-entropy is responsible.
- **Delivery** (on the holder): every ``interval`` seconds, and at once
  when membership says a target joined or is alive again, each live
  target's hints are sent, oldest first: a chunk after asking the target
  whether it has an intact copy (``chunk.has``: a hash check there, no
  transfer), an entry through its table's own apply, which merges by HLC,
  so a hint delivered twice is harmless. A delivered hint is dropped. A
  chunk copy this node held only for hints (it is not among the chunk's
  owners) is deleted once no hint needs it, and its provider record is no
  longer republished. One hint is in flight at a time, and chunks go at
  most ``rate`` bytes/s, so delivery never crowds out clients; a target
  that stops answering ends its turn, and the next run resumes where the
  queue stands.
- Hints older than ``window`` are dropped unsent: past it, anti-entropy is
  responsible.
- A holder that is not an owner of a hinted chunk announces it in the DHT
  (a provider record), so a reader whose owners all lack the chunk finds it
  before it is delivered (:class:`~z4node.replication.chunks.ReplicatedChunks`).
"""

import math

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from z4node.cluster.channel import CallError, RemoteError, Reply, RpcError
from z4node.periodic import PeriodicJob
from z4node.replication.chunks import (
    ReplicatedChunks, digest_arg, received_chunk)
from z4node.replication.table import json_body, read_json
from z4node.storage.chunks import ChunkCorrupted, ChunkMissing

MiB = 1024 * 1024


class HintedHandoff(Service):
    """Hint hand-off, holding and delivery of one node (see the module
    docstring). ``hints`` is this node's
    :class:`~z4node.storage.hint_store.HintStore`, ``chunks`` its
    :class:`~z4node.storage.chunks.ChunkStore`, ``cluster`` what
    :class:`~z4node.cluster.service.ClusterService` offers."""

    log = Logger()

    window = 3 * 3600.0  # seconds a hint is kept undelivered
    interval = 10.0  # seconds between delivery runs
    rate = 32 * MiB  # bytes/s of chunks a holder delivers
    max_pending_bytes = 64 * MiB
    batch_size = 32
    # Nodes past the owners considered as holders before a live owner is.
    holder_candidates = 3

    def __init__(self, clock, cluster, hints, chunks, window=None, rate=None):
        self._clock = clock
        self._cluster = cluster
        self._hints = hints
        self._chunks = chunks
        if window is not None:
            self.window = window
        if rate is not None:
            self.rate = rate
        self._pending_bytes = 0
        self._running = False
        self._again = False
        self._waiters = []
        self._stopping = False
        self._job = PeriodicJob("hint delivery", clock, self.deliver)
        # {target: {"count", "bytes", "oldest"}}: exact after every delivery
        # run, kept up to date in between as hints arrive.
        self.queues = {}
        self.counters = {"handed_off": 0, "hand_off_failures": 0, "skipped": 0, "held": 0,
                         "delivered": 0, "delivered_bytes": 0, "already_there": 0,
                         "undeliverable": 0, "expired": 0, "copies_dropped": 0}
        cluster.serve("hint.put", self._serve_put)
        cluster.subscribe(self._member_changed)

    # -- service -------------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        self._stopping = False
        # Now: hints held before a restart are delivered without waiting.
        self._job.start(self.interval, now=True)

    def stopService(self):
        self._stopping = True
        self._job.stop()
        return Service.stopService(self)

    # -- hand-off (the coordinator) ------------------------------------------------

    def holder(self, key, owners, target):
        """Who holds a hint for ``target`` (one of ``owners`` of ``key``):
        the first live node after the owners in ring order, else the first
        live owner other than the target; None if nobody is alive."""
        around = self._cluster.owners(key, len(owners) + self.holder_candidates)
        live = [m for m in around if m != target and self._cluster.is_alive(m)]
        outside = [m for m in live if m not in owners]
        return (outside or live or [None])[0]

    def hand_off_chunk(self, target, owners, digest, data):
        """Have a holder keep ``data`` (the chunk ``digest``) for ``target``;
        in the background."""
        size = len(data)
        holder = self.holder(digest, owners, target)
        if holder is None or self._pending_bytes + size > self.max_pending_bytes:
            self.counters["skipped"] += 1
            self.log.warn("chunk {hash}: no hint kept for {target} (no live holder, or "
                          "too much hint data in flight); anti-entropy will restore it",
                          hash=digest.hex(), target=target)
            return
        self._pending_bytes += size
        if holder == self._cluster.local.id:
            d = Deferred.fromCoroutine(self._hold_chunk(target, digest, data))
        else:
            d = Deferred.fromCoroutine(self._cluster.call(
                holder, "hint.put", {"target": target, "hash": digest.hex()}, data))

        def settled(result):
            self._pending_bytes -= size
            return result
        d.addBoth(settled)
        self._handed_off(d, f"chunk {digest.hex()}", target, holder)

    def hand_off_entry(self, target, owners, partition, table, entry):
        """Have a holder keep ``entry`` of ``table`` for ``target``; in the
        background."""
        holder = self.holder(partition, owners, target)
        if holder is None:
            self.counters["skipped"] += 1
            return
        if holder == self._cluster.local.id:
            d = Deferred.fromCoroutine(self._hold_entry(target, table, entry))
        else:
            d = Deferred.fromCoroutine(self._cluster.call(
                holder, "hint.put", {"target": target, "table": table}, json_body(entry)))
        self._handed_off(d, f"{table} entry", target, holder)

    def _handed_off(self, d, what, target, holder):
        def done(_):
            self.counters["handed_off"] += 1

        def failed(failure):
            self.counters["hand_off_failures"] += 1
            self.log.warn("{what}: {holder} did not take the hint for {target}: {why}",
                          what=what, holder=holder, target=target,
                          why=failure.getErrorMessage())
        d.addCallbacks(done, failed)

    # -- holding (the holder) -------------------------------------------------------

    async def _serve_put(self, peer_id, args, body):
        target = args.get("target")
        if not isinstance(target, str) or target == self._cluster.local.id:
            raise CallError("BadRequest", "target must be another member's id")
        if "hash" in args:
            digest = digest_arg(args)
            data = await received_chunk(body, digest, self._chunks.run)
            await self._hold_chunk(target, digest, data)
        else:
            table = args.get("table")
            entry = await read_json(body)
            if not isinstance(table, str) or not isinstance(entry, dict):
                raise CallError("BadRequest", "an entry hint needs a table and an entry")
            await self._hold_entry(target, table, entry)
        return Reply({})

    async def _hold_chunk(self, target, digest, data):
        # Pinned until the hint row is durable, so that a delivery finishing
        # meanwhile does not delete the copy this hint needs (_drop_copy).
        self._chunks.pin(digest)
        try:
            await self._chunks.put_chunk(digest, data)
            await self._hints.add_chunk(target, digest, len(data), self._clock.seconds())
        finally:
            self._chunks.unpin(digest)
        self._held(target, len(data))
        if not self._owns(digest):
            d = self._cluster.dht.provide(digest.hex())
            d.addErrback(lambda f: self.log.info(
                "chunk {hash}: announcing the hinted copy in the DHT failed: {why}",
                hash=digest.hex(), why=f.getErrorMessage()))

    async def _hold_entry(self, target, table, entry):
        await self._hints.add_entry(target, table, entry, self._clock.seconds())
        self._held(target, 0)

    def _held(self, target, size):
        self.counters["held"] += 1
        queue = self.queues.setdefault(
            target, {"count": 0, "bytes": 0, "oldest": self._clock.seconds()})
        queue["count"] += 1
        queue["bytes"] += size

    def _owns(self, digest):
        owners = self._cluster.owners(digest, ReplicatedChunks.replication)
        return self._cluster.local.id in owners

    # -- delivery (the holder) ------------------------------------------------------

    def _member_changed(self, event):
        if event.kind in ("joined", "alive") and event.member.id in self.queues:
            self.deliver().addErrback(self._delivery_failed)

    def _delivery_failed(self, failure):
        self.log.failure("hint delivery failed; it runs again next period", failure)

    def deliver(self):
        """Deliver the hints of every live target; a Deferred that fires
        when a run that started after this call is over (one run at a time:
        a call during a run asks for another after it)."""
        waiter = Deferred()
        self._waiters.append(waiter)
        if self._running:
            self._again = True
        else:
            self._run()
        return waiter

    def _run(self):
        self._running, self._again = True, False
        waiters, self._waiters = self._waiters, []

        def finished(result):
            self._running = False
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            if self._again and not self._stopping:
                self._run()
        Deferred.fromCoroutine(self._deliver_all()).addBoth(finished)

    async def _deliver_all(self):
        expired, chunks = await self._hints.expire(self._clock.seconds() - self.window)
        self.counters["expired"] += expired
        for digest in chunks:
            await self._drop_copy(digest)
        self.queues = await self._hints.queues()
        for target in list(self.queues):
            if self._stopping:
                return
            if self._cluster.is_alive(target):
                await self._deliver_to(target)
        self.queues = await self._hints.queues()

    async def _deliver_to(self, target):
        after = 0
        while not self._stopping:
            batch = await self._hints.batch(target, after, self.batch_size)
            if not batch:
                return
            done = []
            try:
                for hint in batch:
                    await self._deliver_one(hint)
                    done.append(hint)
            except RpcError as e:
                self.log.info("hints for {target}: delivery paused ({why})",
                              target=target, why=str(e))
                return
            finally:
                if done:
                    await self._hints.remove([hint.id for hint in done])
                    for digest in {hint.chunk for hint in done if hint.chunk is not None}:
                        await self._drop_copy(digest)
            after = batch[-1].id

    async def _deliver_one(self, hint):
        """Send one hint to its target; returns when it may be dropped
        (delivered, or never deliverable). RpcError (not RemoteError) if
        the target could not be reached."""
        try:
            if hint.chunk is not None:
                await self._deliver_chunk(hint)
            elif hint.entry is None:
                self.counters["undeliverable"] += 1
                self.log.warn("a hinted {table} entry for {target} cannot be opened; "
                              "dropped", table=hint.table, target=hint.target)
            else:
                await self._cluster.call(hint.target, f"table.{hint.table}.apply", {},
                                         json_body(hint.entry))
                self.counters["delivered"] += 1
        except RemoteError as e:
            # The target ran the call and refused it: sending again would
            # not change its answer.
            self.counters["undeliverable"] += 1
            self.log.warn("hint for {target} refused ({why}); dropped", target=hint.target,
                          why=str(e))

    async def _deliver_chunk(self, hint):
        target, digest = hint.target, hint.chunk
        response = await self._cluster.call(target, "chunk.has", {"hash": digest.hex()})
        if response.result.get("has"):
            self.counters["already_there"] += 1
            return
        try:
            data = await self._chunks.get_chunk(digest)
        except (ChunkMissing, ChunkCorrupted) as e:
            self.counters["undeliverable"] += 1
            self.log.warn("chunk {hash} hinted for {target} is no longer readable here "
                          "({why}); dropped", hash=digest.hex(), target=target, why=str(e))
            return
        await self._cluster.call(target, "chunk.put", {"hash": digest.hex()}, data)
        self.counters["delivered"] += 1
        self.counters["delivered_bytes"] += len(data)
        await deferLater(self._clock, len(data) / self.rate, lambda: None)

    async def _drop_copy(self, digest):
        """Delete this node's copy of a chunk it held only for hints, once
        no hint needs it."""
        if self._owns(digest) or await self._hints.holds_chunk(digest) \
                or self._chunks.is_pinned(digest):
            return
        self._cluster.dht.unprovide(digest.hex()).addErrback(self._not_withdrawn, digest)
        if await self._chunks.delete_chunk(digest, math.inf) is not None:
            self.counters["copies_dropped"] += 1

    def _not_withdrawn(self, failure, digest):
        # The record expires within a day anyway; meanwhile a reader that
        # asks here finds no copy and tries the next provider.
        self.log.info("hints: withdrawing the provider record of {hash} failed: {why}",
                      hash=digest.hex(), why=failure.getErrorMessage())

    # -- status ----------------------------------------------------------------------

    def status(self):
        """Queues per target (count, bytes, age of the oldest hint in
        seconds) and counters, for ``/_z4/status``."""
        now = self._clock.seconds()
        return {
            "queues": {target: {"count": q["count"], "bytes": q["bytes"],
                                "oldest_age": round(max(0.0, now - q["oldest"]), 1)}
                       for target, q in sorted(self.queues.items())},
            "window": self.window,
            "rate": self.rate,
            **self.counters,
            "delivery": self._job.status(),
        }
