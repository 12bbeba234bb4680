"""Partitioned tables: entries kept on the ring owners of their partition,
written and read by quorum, repaired on read (DESIGN.md, "A replicated
table"; Garage's ``table`` crate is the model).

Owns the coordinator side of one such table and the peer operations that
serve it. What an entry means is the table's :class:`Schema`: its partition
key (which decides the owners), its sort key (which names it within the
partition) and its HLC; two entries with the same keys merge
last-writer-wins by HLC, and a deletion is an entry too (a tombstone), so
an old replica can never bring back what was deleted. How entries are kept
on one node is the :class:`LocalStore` given to the table; it too merges
by HLC, so applying an entry twice, or an older one after a newer, changes
nothing.

- **Write**: the entry goes to every owner of its partition (the local
  store when this node is one) and the write returns once ``write_quorum``
  *true owners* hold it; fewer, and it raises
  :class:`~z4node.replication.errors.QuorumNotReached` (the copies that did
  land stay, and the newest wins wherever they meet).
- **Read**: ``read_quorum`` owners are asked (this node first when it owns
  the partition); the newest answer wins. An owner that answered something
  older, or nothing, is sent the newest in the background (read repair),
  without slowing the answer.
- Quorums are majorities of the replication factor min(3, layout size), so
  a write quorum and a read quorum always share an owner: a read that
  starts after a write was acknowledged sees it or something newer.

Owners come from the layout, not from liveness (DESIGN.md): a dead owner
still counts toward the replication factor; a call to it fails fast and
counts as a missing answer.
"""

import abc

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from z4node.cluster.channel import CallError, Reply, RpcError
from z4node.replication.errors import QuorumNotReached, first_successes


class Schema(abc.ABC):
    """How a table's entries are keyed."""

    @abc.abstractmethod
    def partition(self, entry):
        """The ring key (bytes) whose owners hold ``entry``."""

    @abc.abstractmethod
    def sort_key(self, entry):
        """What names ``entry`` within its partition (JSON-able)."""

    @staticmethod
    def hlc(entry):
        return entry["hlc"]

    def newest(self, entries):
        """The entry that wins a merge (None if there is none)."""
        present = [e for e in entries if e is not None]
        return max(present, key=self.hlc, default=None)


class LocalStore(abc.ABC):
    """This node's copy of a table's partitions; both methods return
    awaitables."""

    @abc.abstractmethod
    def apply(self, entry):
        """Merge ``entry`` (last-writer-wins by HLC)."""

    @abc.abstractmethod
    def get(self, partition, sort_key):
        """The entry stored under those keys, tombstones included, or None."""


class PartitionedTable:
    """One table partitioned over the ring (see the module docstring)."""

    log = Logger()

    replication = 3

    def __init__(self, name, schema, store, cluster):
        self.name = name
        self.schema = schema
        self.store = store
        self._cluster = cluster
        self.counters = {"writes": 0, "reads": 0, "quorum_failures": 0,
                         "read_repairs": 0, "repair_failures": 0}
        cluster.serve(f"table.{name}.apply", self._serve_apply)
        cluster.serve(f"table.{name}.get", self._serve_get)

    # -- quorums -----------------------------------------------------------------

    def owners(self, partition):
        return self._cluster.owners(partition, self.replication)

    @staticmethod
    def write_quorum(owners):
        return len(owners) // 2 + 1

    read_quorum = write_quorum

    # -- write ---------------------------------------------------------------------

    async def write(self, entry):
        """Store ``entry`` on its partition's owners; returns once a write
        quorum of them holds it, else QuorumNotReached."""
        self.counters["writes"] += 1
        owners = self.owners(self.schema.partition(entry))
        needed = self.write_quorum(owners)
        acked = await first_successes([self._apply_at(owner, entry) for owner in owners],
                                      needed)
        if acked < needed:
            self.counters["quorum_failures"] += 1
            raise QuorumNotReached(f"{self.name}: {acked} of the {needed} owners needed "
                                   f"hold the write")

    def _apply_at(self, owner, entry):
        if owner == self._cluster.local.id:
            return Deferred.fromCoroutine(_awaited(self.store.apply(entry)))
        return Deferred.fromCoroutine(self._cluster.call(
            owner, f"table.{self.name}.apply", {"entry": entry}))

    async def _serve_apply(self, peer_id, args, body):
        entry = args.get("entry")
        if not isinstance(entry, dict):
            raise CallError("BadRequest", "entry must be an object")
        try:
            await self.store.apply(entry)
        except ValueError as e:
            raise CallError("BadEntry", str(e)) from None
        return Reply({})

    # -- read ------------------------------------------------------------------------

    async def read(self, partition, sort_key):
        """The newest entry under those keys among a read quorum of owners
        (a tombstone is returned as it is: the caller decides what it
        means); None if none has it. QuorumNotReached if too few answer."""
        self.counters["reads"] += 1
        owners = self.owners(partition)
        needed = self.read_quorum(owners)
        local = self._cluster.local.id
        # This node first when it is an owner: its answer costs no call.
        ordered = sorted(owners, key=lambda owner: owner != local)
        answers = {}
        pending = list(ordered)
        while len(answers) < needed and pending:
            batch, pending = pending[:needed - len(answers)], pending[needed - len(answers):]
            results = await _settle([self._get_at(owner, partition, sort_key)
                                     for owner in batch])
            for owner, (ok, value) in zip(batch, results):
                if ok:
                    answers[owner] = value
        if len(answers) < needed:
            self.counters["quorum_failures"] += 1
            raise QuorumNotReached(f"{self.name}: {len(answers)} of the {needed} owners "
                                   f"needed answered")
        newest = self.schema.newest(answers.values())
        if newest is not None:
            stale = [owner for owner, value in answers.items()
                     if value is None or self.schema.hlc(value) < self.schema.hlc(newest)]
            for owner in stale:
                self._repair(owner, newest)
        return newest

    def _get_at(self, owner, partition, sort_key):
        if owner == self._cluster.local.id:
            return Deferred.fromCoroutine(_awaited(self.store.get(partition, sort_key)))
        d = Deferred.fromCoroutine(self._cluster.call(
            owner, f"table.{self.name}.get",
            {"partition": partition.hex(), "sort": sort_key}))
        return d.addCallback(lambda response: response.result.get("entry"))

    async def _serve_get(self, peer_id, args, body):
        try:
            partition = bytes.fromhex(args["partition"])
            sort_key = args["sort"]
        except (KeyError, TypeError, ValueError):
            raise CallError("BadRequest", "partition (hex) and sort are required") from None
        return Reply({"entry": await self.store.get(partition, sort_key)})

    def _repair(self, owner, entry):
        self.counters["read_repairs"] += 1
        d = self._apply_at(owner, entry)

        def failed(failure):
            self.counters["repair_failures"] += 1
            failure.trap(RpcError, CallError)
            self.log.info("{table}: read repair of {owner} failed: {why}", table=self.name,
                          owner=owner, why=failure.getErrorMessage())
        d.addErrback(failed)
        d.addErrback(lambda f: self.log.failure("{table}: read repair failed", f,
                                                table=self.name))

    def status(self):
        return dict(self.counters)


async def _awaited(value):
    return await value


async def _settle(deferreds):
    """[(succeeded, result)] of every Deferred, in order, once all settle."""
    results = []
    for d in deferreds:
        try:
            results.append((True, await d))
        except (RpcError, QuorumNotReached):
            results.append((False, None))
    return results
