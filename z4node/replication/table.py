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
  land stay, and the newest wins wherever they meet). An owner that is down
  is not called, and an owner that is down or does not answer gets a hint
  (:mod:`z4node.replication.hints`), which never counts toward the quorum.
- **Read**: ``read_quorum`` owners are asked (this node first when it owns
  the partition); the newest answer wins. An owner that answered something
  older, or nothing, is sent the newest in the background (read repair),
  without slowing the answer.
- Quorums are majorities of the replication factor min(3, layout size), so
  a write quorum and a read quorum always share an owner: a read that
  starts after a write was acknowledged sees it or something newer.
- While a partition's data moves to new owners after a ring change
  (``cluster.previous_owners``, the owners in the settled ring, differ
  from the owners), a write must reach a majority of both sets (Garage's
  layout versions), and a read asks a majority of both
  (:func:`ask_read_quorum`); the newest answer wins. So a majority of the
  settled ring's owners holds every write, even if the ring changes again
  (or back) before the data has moved.

Owners come from the layout, not from liveness (DESIGN.md): a dead owner
still counts toward the replication factor; a call to it fails fast and
counts as a missing answer.
"""

import abc
import json

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from z4node.cluster.channel import CallError, RemoteError, Reply, RpcError
from z4node.replication.errors import (QuorumNotReached, majority, quorum_successes,
                                       require_majorities)

log = Logger()


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
        """Merge ``entry`` (last-writer-wins by HLC); whether it took it
        (False: what it holds under those keys is as new or newer)."""

    @abc.abstractmethod
    def get(self, partition, sort_key):
        """The entry stored under those keys, tombstones included, or None."""


class PartitionedTable:
    """One table partitioned over the ring (see the module docstring);
    ``handoff`` is the node's :class:`~z4node.replication.hints.HintedHandoff`
    (None: no hints)."""

    log = Logger()

    replication = 3

    def __init__(self, name, schema, store, cluster, handoff=None):
        self.name = name
        self.schema = schema
        self.store = store
        self._cluster = cluster
        self._handoff = handoff
        self.counters = {"writes": 0, "reads": 0, "quorum_failures": 0,
                         "read_repairs": 0, "repair_failures": 0}
        cluster.serve(f"table.{name}.apply", self._serve_apply)
        cluster.serve(f"table.{name}.get", self._serve_get)

    # -- quorums -----------------------------------------------------------------

    def owners(self, partition):
        return self._cluster.owners(partition, self.replication)

    # -- write ---------------------------------------------------------------------

    async def write(self, entry):
        """Store ``entry`` on its partition's owners; returns once a write
        quorum of them holds it, else QuorumNotReached. Returns whether
        every owner of that quorum took it: False when one held something
        as new or newer under its keys (so the entry is not the newest
        there, nor, as quorums overlap, newer than any write acknowledged
        before this one began)."""
        self.counters["writes"] += 1
        partition = self.schema.partition(entry)
        owners = self.owners(partition)
        # While data moves from the settled ring's owners, they take the
        # write too, so a majority of them still holds everything.
        previous = moving_from(self._cluster, partition, owners)
        sets = [owners, previous] if previous else [owners]
        taken = []
        calls = {owner: self._write_at(owner, owners, partition, entry) for owner in owners}
        calls.update({member: self._apply_previous(member, entry) for member in previous
                      if member not in owners})
        for d in calls.values():
            d.addCallback(taken.append)
        acked = await quorum_successes(calls, sets)
        try:
            require_majorities(acked, sets, self.name)
        except QuorumNotReached:
            self.counters["quorum_failures"] += 1
            raise
        return all(taken)

    def _apply_previous(self, member, entry):
        """Apply a write on an owner in the ring data is moving from (no
        hint if it is down: it is leaving the partition)."""
        if not takes_moving_writes(self._cluster, member):
            return fail(RpcError(f"{self.name}: {member} is down or leaving the ring"))
        return self._apply_at(member, entry)

    def _write_at(self, owner, owners, partition, entry):
        """Apply a write on one owner; if it is down or does not answer, a
        hint goes to a holder in the background (and this still fails: a
        hint is not an owner's copy)."""
        if owner != self._cluster.local.id and not self._cluster.is_alive(owner):
            self._hand_off(owner, owners, partition, entry)
            return fail(RpcError(f"{self.name}: {owner} is down"))

        def unreached(failure):
            if failure.check(RpcError) and not failure.check(RemoteError):
                self._hand_off(owner, owners, partition, entry)
            return failure
        return self._apply_at(owner, entry).addErrback(unreached)

    def _hand_off(self, owner, owners, partition, entry):
        if self._handoff is not None:
            self._handoff.hand_off_entry(owner, owners, partition, self.name, entry)

    def _apply_at(self, owner, entry):
        """Apply ``entry`` on ``owner``; fires with whether it took it."""
        if owner == self._cluster.local.id:
            return Deferred.fromCoroutine(_awaited(self.store.apply(entry))).addCallback(
                lambda took: took is not False)
        return Deferred.fromCoroutine(self._cluster.call(
            owner, f"table.{self.name}.apply", {}, json_body(entry))).addCallback(
                lambda response: response.result.get("took", True) is not False)

    async def _serve_apply(self, peer_id, args, body):
        entry = await read_json(body)
        if not isinstance(entry, dict):
            raise CallError("BadRequest", "entry must be an object")
        try:
            took = await self.store.apply(entry)
        except ValueError as e:
            raise CallError("BadEntry", str(e)) from None
        return Reply({"took": took is not False})

    # -- read ------------------------------------------------------------------------

    async def read(self, partition, sort_key):
        """The newest entry under those keys among a read quorum of owners
        (a tombstone is returned as it is: the caller decides what it
        means); None if none has it. QuorumNotReached if too few answer."""
        self.counters["reads"] += 1
        owners = self.owners(partition)
        try:
            answers = await ask_read_quorum(
                self._cluster, partition, owners,
                lambda owner: self._get_at(owner, partition, sort_key))
        except QuorumNotReached as e:
            self.counters["quorum_failures"] += 1
            raise QuorumNotReached(f"{self.name}: {e}") from None
        newest = self.schema.newest(answers.values())
        if newest is not None:
            stale = [owner for owner, value in answers.items() if owner in owners and (
                value is None or self.schema.hlc(value) < self.schema.hlc(newest))]
            for owner in stale:
                self.repair(owner, newest)
        return newest

    def _get_at(self, owner, partition, sort_key):
        if owner == self._cluster.local.id:
            return Deferred.fromCoroutine(_awaited(self.store.get(partition, sort_key)))
        return Deferred.fromCoroutine(self._cluster.call(
            owner, f"table.{self.name}.get",
            {"partition": partition.hex(), "sort": sort_key})).addCallback(response_json)

    async def _serve_get(self, peer_id, args, body):
        try:
            partition = bytes.fromhex(args["partition"])
            sort_key = args["sort"]
        except (KeyError, TypeError, ValueError):
            raise CallError("BadRequest", "partition (hex) and sort are required") from None
        return Reply({}, json_body(await self.store.get(partition, sort_key)))

    def repair(self, owner, entry):
        """Send ``entry`` to ``owner`` in the background (read repair)."""
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


def takes_moving_writes(cluster, member):
    """Whether a previous owner is sent a write while data moves: not when
    it is down, nor when it is out of the ring altogether (draining, left
    or forgotten): it will own nothing, and what it was sent after its own
    pass would only linger on a node being emptied. Its place in the
    previous owners' majority stays, so the others must hold the write."""
    if member not in cluster.ring:
        return False
    return member == cluster.local.id or cluster.is_alive(member)


def moving_from(cluster, partition, owners):
    """The partition's owners in the settled ring while its data moves to
    ``owners`` after a ring change; [] when it is not moving."""
    previous = cluster.previous_owners(partition, PartitionedTable.replication)
    return previous if previous and set(previous) != set(owners) else []


async def ask_read_quorum(cluster, partition, owners, ask):
    """``{member: answer}`` from a majority of ``owners`` (the partition's
    owners; :func:`ask_quorum`) and, while the partition's data moves to
    them after a ring change, from a majority of its previous owners too,
    those already asked counting: a read then sees what has not moved yet.
    The previous owners' part is best effort (they may be gone); the
    owners' is not."""
    answers = await ask_quorum(cluster, owners, ask)
    previous = moving_from(cluster, partition, owners)
    if not previous:
        return answers
    needed = majority(previous) - sum(1 for member in previous if member in answers)
    if needed > 0:
        try:
            answers.update(await ask_quorum(
                cluster, [m for m in previous if m not in answers], ask, needed))
        except QuorumNotReached as e:
            log.info("a read found too few previous owners of a moving partition: {why}",
                     why=str(e))
    return answers


async def ask_quorum(cluster, owners, ask, needed=None):
    """``{owner: answer}`` from a majority of ``owners`` (or ``needed`` of
    them): ``ask(owner)`` (a Deferred) goes to as many as are still needed
    at a time, this node first when it is an owner (its answer costs no
    call), then the owners membership says are alive, and to the next
    owners when some fail; an owner declared dead is asked last, so a read
    does not wait out a call timeout while live owners could answer.
    QuorumNotReached if too few answer."""
    if needed is None:
        needed = majority(owners)
    local = cluster.local.id
    pending = sorted(owners, key=lambda owner: (
        owner != local, owner != local and not cluster.is_alive(owner)))
    answers = {}
    while len(answers) < needed and pending:
        batch, pending = pending[:needed - len(answers)], pending[needed - len(answers):]
        results = await _settle([ask(owner) for owner in batch])
        for owner, (ok, value) in zip(batch, results):
            if ok:
                answers[owner] = value
    if len(answers) < needed:
        raise QuorumNotReached(f"{len(answers)} of the {needed} owners needed answered")
    return answers


# The largest JSON document a peer call or reply carries in its body (an
# entry with a large object's chunk list, a page of a listing).
MAX_JSON_BYTES = 16 * 1024 * 1024


def json_body(value):
    """A call's or reply's body holding ``value`` as JSON: entries and pages
    go in the body (inside the frame when small, streamed when not), not in
    the call's JSON arguments."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


async def read_json(body):
    """The JSON value a :func:`json_body` carried; CallError if it is
    missing or malformed."""
    if body is None:
        raise CallError("BadRequest", "the call needs a JSON body")
    try:
        return json.loads(await body.read_all(MAX_JSON_BYTES))
    except RpcError as e:
        raise CallError("TooLarge", str(e)) from None
    except ValueError:
        raise CallError("BadRequest", "the body is not JSON") from None


async def _response_json(response):
    if response.body is None:
        raise RpcError("the reply has no body")
    try:
        return json.loads(await response.body.read_all(MAX_JSON_BYTES))
    except ValueError:
        raise RpcError("the reply's body is not JSON") from None


def response_json(response):
    """A Deferred of the JSON value in a reply's body."""
    return Deferred.fromCoroutine(_response_json(response))


async def _awaited(value):
    return await value


async def _settle(deferreds):
    """[(succeeded, result)] of every Deferred, in order, once all settle."""
    results = []
    for d in deferreds:
        try:
            results.append((True, await d))
        except (RpcError, CallError, QuorumNotReached):
            results.append((False, None))
    return results
