"""Merkle anti-entropy for partitioned tables: the owners of a partition
compare the trees of their copies and exchange only the entries that
differ (DESIGN.md, "Anti-entropy"; Dynamo section 4.7, Cassandra's repair,
Garage's ``table/merkle.rs``).

Owns the periodic pass and the peer operations it uses. Each table's local
store keeps its tree up to date on every write (:mod:`z4node.storage.merkle`
for object versions, multipart uploads and their parts) and answers
``merkle_nodes(partition, nodes)`` and ``merkle_leaves(partition,
prefixes)``; this module only compares.

- Every ``interval`` seconds (the first pass after a random part of it, so
  nodes do not all start together), a node takes each table, and each
  partition it holds and owns, and syncs it with each other live owner.
- A sync compares the roots; where they differ it asks for the 16 children
  of every differing node, level by level (one call a level, whatever the
  number of differing nodes), down to the leaf buckets that differ; then it
  fetches those buckets' leaves. The entries of the slots where the peer
  holds something newer are read from the peer and applied here, and those
  where this node holds something newer, or the peer nothing, are sent to
  the peer, up to ``MAX_ENTRIES`` a call. So the calls and bytes grow with
  the number of differing entries, not with the size of the table.
  Tombstones are entries like any other: the newest edit wins, in whatever
  order things arrive. An entry the receiving store refuses (its bucket is
  gone there, or its upload ended) is counted as refused and skipped.
- A sync that fails (the peer went away) is counted and logged; the next
  pass tries again. The loop never stops on an error.
- The same pass then syncs the chunk set this node shares with each other
  owner (:mod:`z4node.replication.chunk_sync`), walking its trees with the
  same :func:`differing_buckets`.
"""

from functools import partial

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from z4node.cluster.channel import CallError, Reply, RpcError
from z4node.periodic import PeriodicJob
from z4node.replication.table import json_body, read_json, response_json
from z4node.storage.merkle import DEPTH, ROOT, children

# Tree nodes or leaf buckets asked for in one call at most (the children of
# every node of a level of a full tree: 16 ** DEPTH).
MAX_NODES = 16 ** DEPTH
# Entries read or sent in one call at most.
MAX_ENTRIES = 256


class AntiEntropy(Service):
    """Anti-entropy passes over partitioned tables (see the module
    docstring). ``tables`` are PartitionedTables whose stores offer the
    Merkle reads; ``partitions()`` returns the partitions this node holds."""

    log = Logger()

    interval = 600.0  # seconds between passes

    def __init__(self, clock, rng, cluster, tables, partitions, interval=None,
                 chunk_sync=None):
        self._clock = clock
        self.chunk_sync = chunk_sync
        self._rng = rng
        self._cluster = cluster
        self._tables = tables
        self._partitions = partitions
        if interval is not None:
            self.interval = interval
        self._first = None
        self._job = PeriodicJob("anti-entropy", clock, self._periodic)
        self.counters = {"passes": 0, "syncs": 0, "sync_failures": 0, "partitions_differing": 0,
                         "calls": 0, "pulled": 0, "pushed": 0, "refused": 0}
        self.last_pass = None  # {"finished", "seconds", "repaired"}
        # Of the pass under way: {"done", "total"} syncs (None between passes).
        self.progress = None
        # Each partition's last sync: {partition (as text): {"synced", "repaired",
        # "failed"}}, what it repaired and whether a sync of it failed in the
        # last pass that reached it.
        self.partitions = {}
        self._running = False
        self._again = False
        for table in tables:
            cluster.serve(f"ae.{table.name}.nodes", partial(self._serve_nodes, table))
            cluster.serve(f"ae.{table.name}.leaves", partial(self._serve_leaves, table))
            cluster.serve(f"ae.{table.name}.entries", partial(self._serve_entries, table))
            cluster.serve(f"ae.{table.name}.apply", partial(self._serve_apply, table))

    # -- service -----------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        self._first = self._clock.callLater(self._rng.uniform(0, self.interval),
                                            self._job.start, self.interval, True)

    def stopService(self):
        if self._first is not None and self._first.active():
            self._first.cancel()
        self._job.stop()
        return Service.stopService(self)

    # -- a pass --------------------------------------------------------------------

    def start_pass(self):
        """Start a pass now (``z4 cluster repair``), or once the pass under
        way ends, so that what the caller wrote before is compared; the
        value of the ``passes`` counter once that pass is done."""
        if self._running:
            self._again = True
            return self.counters["passes"] + 2
        self._launch().addErrback(self._failed)
        return self.counters["passes"] + 1

    def _periodic(self):
        """The periodic job's run: a pass, unless one is under way."""
        if not self._running:
            return self._launch()

    def _launch(self):
        self._running = True
        d = Deferred.fromCoroutine(self.run_pass())

        def ended(result):
            self._running = False
            if self._again:
                self._again = False
                self._launch().addErrback(self._failed)
            return result
        return d.addBoth(ended)

    def _failed(self, failure):
        # A pass the periodic job did not start: its failure is logged
        # here; the next pass runs on time.
        self.log.failure("anti-entropy: a pass failed", failure)

    async def run_pass(self):
        """Sync every partition this node owns, of every table, with its
        other live owners, then (with a ``chunk_sync``) the chunk set; the
        number of entries and chunks repaired (pulled and pushed)."""
        started = self._clock.seconds()
        before = self.counters["pulled"] + self.counters["pushed"]
        local = self._cluster.local.id
        partitions = await self._partitions()
        plan = []
        for table in self._tables:
            for partition in partitions:
                owners = table.owners(partition)
                if local in owners:
                    plan.extend((table, partition, peer) for peer in owners
                                if peer != local and self._cluster.is_alive(peer))
        ring, chunk_peers = (self.chunk_sync.peers() if self.chunk_sync is not None
                             else (None, []))
        self.progress = {"done": 0, "total": len(plan) + len(chunk_peers)}
        seen = set()
        try:
            for table, partition, peer in plan:
                name = partition.decode("utf-8", "replace")
                if name not in seen:
                    seen.add(name)
                    self.partitions[name] = {"synced": None, "repaired": 0, "failed": False}
                state = self.partitions[name]
                moved = self.counters["pulled"] + self.counters["pushed"]
                try:
                    await self.sync(table, partition, peer)
                except (RpcError, CallError) as e:
                    self.counters["sync_failures"] += 1
                    state["failed"] = True
                    self.log.info("anti-entropy: {table} with {peer} failed ({why})",
                                  table=table.name, peer=peer, why=str(e))
                state["repaired"] += self.counters["pulled"] + self.counters["pushed"] - moved
                state["synced"] = self._clock.seconds()
                self.progress["done"] += 1
            repaired = self.counters["pulled"] + self.counters["pushed"] - before
            for peer in chunk_peers:
                repaired += await self.chunk_sync.sync_with(ring, peer)
                self.progress["done"] += 1
        finally:
            self.progress = None
        for name in set(self.partitions) - seen:
            del self.partitions[name]  # no longer owned here, or gone
        self.counters["passes"] += 1
        self.last_pass = {"finished": self._clock.seconds(),
                          "seconds": round(self._clock.seconds() - started, 3),
                          "repaired": repaired}
        return repaired

    async def sync(self, table, partition, peer):
        """Make this node's and ``peer``'s copies of ``partition`` of
        ``table`` equal."""
        self.counters["syncs"] += 1
        store = table.store
        frontier = await differing_buckets(
            partial(store.merkle_nodes, partition),
            partial(self._remote_nodes, table, peer, partition))
        if not frontier:
            return
        self.counters["partitions_differing"] += 1
        mine = dict((tuple(k), tuple(v)) for k, v in await store.merkle_leaves(partition,
                                                                              frontier))
        theirs = dict((tuple(k), tuple(v)) for k, v in await self._remote_leaves(
            table, peer, partition, frontier))
        pull = [slot for slot, leaf in theirs.items() if slot not in mine or leaf > mine[slot]]
        push = [slot for slot, leaf in mine.items() if slot not in theirs or leaf > theirs[slot]]
        for start in range(0, len(pull), MAX_ENTRIES):
            await self._pull(table, peer, partition, pull[start:start + MAX_ENTRIES])
        for start in range(0, len(push), MAX_ENTRIES):
            await self._push(table, peer, partition, push[start:start + MAX_ENTRIES])

    # Node lists and hashes go in the bodies, which stream: a level of 4,096
    # nodes with their hashes is larger than a call's header frame.

    async def _remote_nodes(self, table, peer, partition, nodes):
        self.counters["calls"] += 1
        response = await self._cluster.call(
            peer, f"ae.{table.name}.nodes", {"partition": partition.hex()},
            json_body(nodes))
        hashes = await response_json(response)
        if not isinstance(hashes, dict):
            raise RpcError("the tree node hashes are not an object")
        return hashes

    async def _remote_leaves(self, table, peer, partition, prefixes):
        self.counters["calls"] += 1
        response = await self._cluster.call(
            peer, f"ae.{table.name}.leaves", {"partition": partition.hex()},
            json_body(prefixes))
        return await response_json(response)

    async def _pull(self, table, peer, partition, slots):
        """Read those entries from the peer (one call) and apply them here."""
        self.counters["calls"] += 1
        response = await self._cluster.call(
            peer, f"ae.{table.name}.entries", {"partition": partition.hex()},
            json_body([list(slot) for slot in slots]))
        entries = await response_json(response)
        if not isinstance(entries, list):
            raise RpcError("the entries are not a list")
        for entry in entries:
            if entry is not None and await self._apply(table, entry):
                self.counters["pulled"] += 1

    async def _apply(self, table, entry):
        """Apply an entry here; False if the store refuses it."""
        try:
            await table.store.apply(entry)
        except CallError:
            self.counters["refused"] += 1
            return False
        return True

    async def _push(self, table, peer, partition, slots):
        """Send the peer this node's entries for those slots (one call)."""
        entries = [await table.store.get(partition, list(slot)) for slot in slots]
        entries = [entry for entry in entries if entry is not None]
        if not entries:
            return
        self.counters["calls"] += 1
        await self._cluster.call(peer, f"ae.{table.name}.apply",
                                 {"partition": partition.hex()}, json_body(entries))
        self.counters["pushed"] += len(entries)

    # -- serving -------------------------------------------------------------------

    async def _serve_nodes(self, table, peer_id, args, body):
        partition, nodes = await _tree_args(args, body)
        return Reply({}, json_body(await table.store.merkle_nodes(partition, nodes)))

    async def _serve_entries(self, table, peer_id, args, body):
        partition = _partition(args)
        slots = await read_json(body)
        if not isinstance(slots, list) or len(slots) > MAX_ENTRIES \
                or not all(isinstance(slot, list) for slot in slots):
            raise CallError("BadRequest", f"at most {MAX_ENTRIES} slots (lists) at a time")
        try:
            entries = [await table.store.get(partition, slot) for slot in slots]
        except (TypeError, ValueError) as e:
            raise CallError("BadRequest", f"not a slot of {table.name}: {e}") from None
        return Reply({}, json_body(entries))

    async def _serve_apply(self, table, peer_id, args, body):
        _partition(args)
        entries = await read_json(body)
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES \
                or not all(isinstance(entry, dict) for entry in entries):
            raise CallError("BadRequest", f"at most {MAX_ENTRIES} entries (objects) at a time")
        for entry in entries:
            try:
                await self._apply(table, entry)
            except ValueError as e:
                raise CallError("BadEntry", str(e)) from None
        return Reply({})

    async def _serve_leaves(self, table, peer_id, args, body):
        partition, prefixes = await _tree_args(args, body)
        leaves = await table.store.merkle_leaves(partition, prefixes)
        return Reply({}, json_body([[list(k), list(v)] for k, v in leaves]))

    # -- status --------------------------------------------------------------------

    def status(self):
        return {"interval": self.interval, **self.counters, "last_pass": self.last_pass,
                "running": self._running, "progress": self.progress,
                "partitions": self.partitions,
                "chunks": None if self.chunk_sync is None else self.chunk_sync.status(),
                "job": self._job.status()}


async def differing_buckets(mine, theirs):
    """The leaf buckets in which two Merkle trees differ ([] for equal
    trees), found by walking down from the root only where they differ:
    ``mine(nodes)`` and ``theirs(nodes)`` answer ``{node: hash}`` for a
    list of tree nodes, and each is asked once a level."""
    frontier = [ROOT]
    for depth in range(DEPTH + 1):
        here = await mine(frontier)
        there = await theirs(frontier)
        frontier = [node for node in frontier if here[node] != there.get(node, 0)]
        if not frontier:
            return []
        if depth < DEPTH:
            frontier = [child for node in frontier for child in children(node)]
    return frontier


def tree_nodes(nodes):
    """``nodes`` if it is a list of at most ``MAX_NODES`` tree nodes (hex
    prefixes up to ``DEPTH`` digits); else CallError."""
    if not isinstance(nodes, list) or len(nodes) > MAX_NODES or not all(
            isinstance(n, str) and len(n) <= DEPTH
            and all(ch in "0123456789abcdef" for ch in n) for n in nodes):
        raise CallError("BadRequest", f"the body must list at most {MAX_NODES} tree nodes")
    return nodes


def _partition(args):
    try:
        return bytes.fromhex(args["partition"])
    except (KeyError, TypeError, ValueError):
        raise CallError("BadRequest", "partition (hex) is required") from None


async def _tree_args(args, body):
    """The partition a tree call names and the tree nodes in its body."""
    partition = _partition(args)
    return partition, tree_nodes(await read_json(body))
