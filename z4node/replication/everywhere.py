"""Tables kept whole on every node: access keys, buckets and their settings,
grants (DESIGN.md, "System tables").

Owns: spreading the entries of such tables over the peer channel and
keeping every node's copy converging. It knows nothing of what an entry
means: each table registers how to list its entries (id, HLC, JSON) and how
to merge one that arrives; merging is last-writer-wins by HLC, and a
deletion is a tombstone entry, so the order in which entries arrive never
matters and applying one twice changes nothing.

- **Writes**: the writer stores an entry locally, then :meth:`publish`
  sends it to every other live member and returns once a majority of the
  layout (itself included) holds it. With fewer, it raises
  :class:`QuorumNotReached`; the entry stays where it landed and reaches
  the rest through sync, so a failed write may still appear (as an S3
  write answered 503 may).
- **Sync**: every ``sync_interval`` seconds the node compares a digest of
  each table with one live peer, chosen at random, and where they differ
  both send their whole table (these tables are small: thousands of rows).
  A member that joins or comes back alive is synced with at once, so a node
  that missed writes while it was away catches up in about a second, not
  at the next period.
- A sync that fails is logged and counted, and the next period runs as
  usual (the loop never stops on an error).
"""

import hashlib
import inspect

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from z4node.cluster.channel import CallError, Reply, RpcError
from z4node.cluster.members import IN_LAYOUT
from z4node.periodic import PeriodicJob
from z4node.replication.errors import QuorumNotReached, first_successes


class _Table:
    def __init__(self, name, entries, merge):
        self.name = name
        self.entries = entries  # () -> iterable of (id, hlc, JSON-able entry)
        self.merge = merge  # (JSON entry) -> awaitable or None


def digest_of(entries):
    """A digest of a table's (id, HLC) pairs, independent of their order."""
    h = hashlib.blake2b(digest_size=16)
    for entry_id, hlc, _ in sorted(entries, key=lambda e: e[0]):
        h.update(f"{entry_id}\0{hlc}\n".encode("utf-8"))
    return h.hexdigest()


class EverywhereTables(Service):
    """The tables every node keeps whole (see the module docstring)."""

    log = Logger()

    sync_interval = 5.0  # seconds between syncs with a random peer
    # A member that joined or came back is synced with this soon after:
    # long enough for it to open its ports.
    rejoin_delay = 0.5  # seconds
    # One table's entries in one call; a larger table is refused loudly
    # rather than sent in a body the peer would not read.
    max_entries = 50_000

    def __init__(self, clock, cluster, rng):
        self._clock = clock
        self._cluster = cluster
        self._rng = rng
        self._tables = {}
        self._loop = PeriodicJob("system table sync", clock, self._sync_tick)
        self._pending = set()  # delayed calls of rejoin syncs
        self.counters = {"published": 0, "applied": 0, "refused": 0, "syncs": 0,
                         "sync_failures": 0, "quorum_failures": 0}
        cluster.serve("everywhere.apply", self._serve_apply)
        cluster.serve("everywhere.digest", self._serve_digest)
        cluster.serve("everywhere.pull", self._serve_pull)
        cluster.subscribe(self._member_changed)

    def register(self, name, entries, merge):
        """Replicate table ``name``: ``entries()`` lists (id, HLC, JSON-able
        entry) of every entry, tombstones included; ``merge(entry)`` applies
        one that arrived (last-writer-wins; it may return an awaitable)."""
        self._tables[name] = _Table(name, entries, merge)

    def startService(self):
        Service.startService(self)
        self._loop.start(self.sync_interval, now=False)

    def stopService(self):
        Service.stopService(self)
        self._loop.stop()
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending.clear()

    # -- writes ------------------------------------------------------------------

    def quorum(self):
        """How many nodes, this one included, must hold a write: a majority
        of the layout (dead members count: they own a vote they cannot cast)."""
        members = len(self._cluster.membership.members(IN_LAYOUT))
        return members // 2 + 1

    async def publish(self, table, entry):
        """Send ``entry`` (already stored here) to every live member; return
        once a majority of the cluster holds it, else QuorumNotReached."""
        self.counters["published"] += 1
        peers = [m.id for m in self._cluster.membership.members()
                 if m.id != self._cluster.local.id]
        needed = self.quorum() - 1
        if needed <= 0 and not peers:
            return
        calls = [Deferred.fromCoroutine(self._cluster.call(
            peer, "everywhere.apply", {"table": table, "entries": [entry]}))
            for peer in peers]
        acked = await first_successes(calls, needed)
        if acked < needed:
            self.counters["quorum_failures"] += 1
            raise QuorumNotReached(
                f"{table}: {acked + 1} of {self.quorum()} nodes needed hold the change")

    async def _serve_apply(self, peer_id, args, body):
        table = self._table(args.get("table"))
        entries = args.get("entries")
        if not isinstance(entries, list):
            raise CallError("BadRequest", "entries must be a list")
        refused = await self._merge_all(table, entries, peer_id)
        if refused:
            raise CallError("BadEntry", f"{refused} of {len(entries)} entries refused")
        return Reply({"applied": len(entries)})

    async def _merge_all(self, table, entries, peer_id):
        """Merge entries from a peer; how many were refused (malformed, or
        too far in the future), each logged and counted."""
        refused = 0
        for entry in entries:
            try:
                await _maybe_deferred(table.merge(entry))
            except ValueError as e:
                refused += 1
                self.log.warn("{table}: refused an entry from {peer}: {why}",
                              table=table.name, peer=peer_id, why=str(e))
        self.counters["applied"] += len(entries) - refused
        self.counters["refused"] += refused
        return refused

    def _table(self, name):
        table = self._tables.get(name)
        if table is None:
            raise CallError("NoSuchTable", str(name))
        return table

    # -- sync ----------------------------------------------------------------------

    def digests(self):
        return {name: digest_of(table.entries()) for name, table in self._tables.items()}

    async def _serve_digest(self, peer_id, args, body):
        return Reply({"digests": self.digests()})

    async def _serve_pull(self, peer_id, args, body):
        names = args.get("tables")
        if not isinstance(names, list):
            raise CallError("BadRequest", "tables must be a list")
        return Reply({"tables": {name: self._encoded(self._table(name)) for name in names}})

    def _encoded(self, table):
        entries = [entry for _, _, entry in table.entries()]
        if len(entries) > self.max_entries:
            raise CallError("TooLarge", f"{table.name} has {len(entries)} entries")
        return entries

    async def sync_with(self, member_id):
        """Compare digests with ``member_id``; where a table differs, pull
        theirs and push ours. Returns the names of the tables that differed."""
        self.counters["syncs"] += 1
        response = await self._cluster.call(member_id, "everywhere.digest", {})
        theirs = response.result.get("digests") or {}
        ours = self.digests()
        differing = sorted(name for name in ours if theirs.get(name) != ours[name])
        if not differing:
            return differing
        response = await self._cluster.call(member_id, "everywhere.pull",
                                            {"tables": differing})
        for name, entries in (response.result.get("tables") or {}).items():
            await self._merge_all(self._table(name), entries, member_id)
        for name in differing:
            await self._cluster.call(member_id, "everywhere.apply", {
                "table": name, "entries": self._encoded(self._tables[name])})
        return differing

    def _sync_tick(self):
        peers = [m.id for m in self._cluster.membership.members()
                 if m.id != self._cluster.local.id]
        if not peers:
            return None
        return self._sync_logged(self._rng.choice(sorted(peers)))

    def _sync_logged(self, member_id):
        d = Deferred.fromCoroutine(self.sync_with(member_id))

        def failed(failure):
            self.counters["sync_failures"] += 1
            failure.trap(RpcError, CallError)
            self.log.info("system tables: sync with {peer} failed: {why}",
                          peer=member_id, why=failure.getErrorMessage())

        def unexpected(failure):
            self.log.failure("system tables: sync with {peer} failed", failure,
                             peer=member_id)
        d.addErrback(failed)
        d.addErrback(unexpected)
        return d

    def _member_changed(self, event):
        if event.kind not in ("joined", "alive") or event.member.id == self._cluster.local.id:
            return
        if not self._loop.running:
            return

        def run():
            self._pending.discard(call)
            self._sync_logged(event.member.id)
        call = self._clock.callLater(self.rejoin_delay, run)
        self._pending.add(call)

    def status(self):
        return dict(self.counters, quorum=self.quorum(), sync_job=self._loop.status())


async def _maybe_deferred(result):
    if inspect.isawaitable(result):
        return await result
    return result

