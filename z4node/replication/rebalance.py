"""Moving data to its new owners when the ring changes: a node joins,
leaves, or a dead member is forgotten (DESIGN.md, "The ring is not
liveness"; issue 12).

Owns the rebalancing of this node's chunk files and object records:

- The node remembers the ring its data was last placed for, the *settled*
  ring (``DATA/layout.json``). Once the ring it uses differs from it, has
  stayed the same for ``settle_seconds`` and the node has joined the
  cluster, a pass starts. A restart therefore moves nothing: the rejoined
  node's ring is its settled ring again. A brand-new node settles on the
  first ring it has held that long.
- A pass first sends the object records (versions with their tombstones,
  multipart uploads and their parts) of every bucket whose owners changed
  to the added owners, from the chosen sender (below), entry by entry
  through each table's own apply (which merges by HLC, so an entry sent
  twice, or one the owner has, changes nothing). Records go first because
  they are small and, until an added owner has a bucket's records,
  listings through it disagree on every key. A displaced owner keeps its
  records for now: deleting them safely needs the tombstone rules of
  anti-entropy (issue 13).
- Then it walks the chunk files in hash order; the cursor is saved every few
  seconds, so a pass cut by a restart resumes where it was (its records are
  sent again first). For each chunk whose owners differ between the
  settled ring and the current one:

  - a node that is no longer an owner (displaced) makes sure every new
    owner holds an intact copy (``chunk.has``, a hash check there; else it
    sends the chunk) and only then deletes its own copy, unless a hint
    still needs it or an upload in progress pinned it;
  - an owner that stays sends the chunk to the owners that were added, if
    it is the one chosen to: the displaced old owners send when one of
    them is alive; if none is (a dead member forgotten), the first live
    old owner that stays sends. So each added copy is sent once.

- While data moves, chunk writes go to the owners in both rings
  (:mod:`z4node.replication.chunks`; not to a node out of the ring, such
  as one draining), so a node that is no longer an owner can be sent a
  chunk after its walk passed it, or after it settled. Such
  *strays* are cleared on every check: once every owner in the node's ring
  holds an intact copy (sent from here if one lacks it), the stray is
  deleted, as a displaced copy is. A node restarted before it cleared one
  keeps it as a spare copy.
- One chunk moves at a time, at most ``rate`` bytes/s, so moving data does
  not crowd out clients.
- A ring change during a pass ends it; the next pass starts over for the
  newest ring, still from the settled one. When a pass ends having placed
  everything, the ring it placed for becomes the settled ring. A chunk or
  bucket that could not be placed (a new owner down) is counted as
  ``unplaced``, a displaced copy still pinned or hinted as ``kept``; then
  the settled ring stays and another pass runs ``retry_seconds`` later.
"""

import json
import math

from twisted.application.service import Service
from twisted.internet.task import deferLater
from twisted.logger import Logger

from z4node import durable
from z4node.cluster.channel import RpcError
from z4node.cluster.ring import Ring, bucket_key
from z4node.periodic import PeriodicJob
from z4node.replication.chunks import ReplicatedChunks
from z4node.replication.table import PartitionedTable, json_body
from z4node.storage.chunks import ChunkCorrupted, ChunkMissing

MiB = 1024 * 1024
# In the data dir: the settled ring and the cursor of a pass in progress.
LAYOUT_FILE = "layout.json"


class Rebalancer(Service):
    """The rebalancing of one node's chunks and object records (see the
    module docstring). ``chunks`` is the node's ChunkStore, ``hints`` its
    HintStore, ``tables`` its ObjectTables (None: chunks only), ``path``
    where the settled ring is kept, ``strays`` the set of chunk hashes
    peers put here though this node does not own them
    (:attr:`ReplicatedChunks.strays`)."""

    log = Logger()

    settle_seconds = 30.0  # the ring must stay unchanged this long first
    check_interval = 5.0  # seconds between looks at the ring
    rate = 32 * MiB  # bytes/s of chunks sent
    save_interval = 5.0  # seconds between saves of a pass's cursor
    # After a pass that left something unplaced (an owner down), the next
    # one starts this long after it: each pass walks every chunk file.
    retry_seconds = 600.0

    def __init__(self, clock, cluster, chunks, hints, path, tables=None, settle=None,
                 rate=None, strays=None):
        self._clock = clock
        self._cluster = cluster
        self._chunks = chunks
        self._hints = hints
        self._tables = tables
        self._path = path
        if settle is not None:
            self.settle_seconds = settle
        if rate is not None:
            self.rate = rate
        self.strays = set() if strays is None else strays
        self._ring_since = clock.seconds()
        self._retry_at = None
        self._strays_retry_at = None
        self._stopping = False
        self._saved_at = None
        self.settled = None  # the settled Ring
        self.cursor = None  # {"ring", "from", "after"} of a pass in progress
        self.progress = None  # the fraction of the hash space a pass has walked
        self.counters = {"passes": 0, "passes_completed": 0, "chunks_changed": 0,
                         "moved_chunks": 0, "moved_bytes": 0, "dropped_copies": 0,
                         "kept_copies": 0, "unplaced": 0, "buckets_changed": 0,
                         "moved_records": 0, "unplaced_buckets": 0, "strays_dropped": 0,
                         "strays_unplaced": 0}
        # What the last completed pass left undone: {"ring", "finished",
        # "unplaced", "unplaced_buckets", "kept_copies"}.
        self.last_pass = None
        self._job = PeriodicJob("rebalance", clock, self.check)
        cluster.subscribe(self._member_changed)

    # -- service -----------------------------------------------------------------

    def startService(self):
        Service.startService(self)
        self._stopping = False
        self._load()
        self._job.start(self.check_interval, now=False)

    def stopService(self):
        self._stopping = True
        self._job.stop()
        return Service.stopService(self)

    def _load(self):
        # A few hundred bytes, read once at start.
        try:
            with open(self._path, "rb") as f:
                state = json.load(f)
            self.settled = Ring.from_json(state["settled"])
            self.cursor = state.get("pass")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.log.warn("rebalance: ignoring {path} ({why}); the next stable ring "
                          "is taken as settled", path=self._path, why=str(e))

    def _save(self):
        state = {"settled": self.settled.to_json(), "pass": self.cursor}
        data = json.dumps(state, separators=(",", ":")).encode("utf-8")
        self._saved_at = self._clock.seconds()
        return self._chunks.run(durable.write_file, self._path, data)

    # -- when to move ------------------------------------------------------------

    def _member_changed(self, event):
        if event.changes_ring:
            self._ring_since = self._clock.seconds()
            self._retry_at = None

    async def check(self):
        """One look at the ring (the periodic job): settle on it, or move
        chunks for it, when it has been stable long enough."""
        ring = self._cluster.ring
        moving = self.settled is not None and ring.fingerprint() != self.settled.fingerprint()
        # Readers look for what has not moved yet on its previous owners.
        self._cluster.previous_ring = self.settled if moving else None
        if not self._cluster.membership.has_joined:
            return
        await self._clear_strays(ring)
        if self._clock.seconds() - self._ring_since < self.settle_seconds:
            return
        if self.settled is None:
            self.settled = ring
            await self._save()
        elif ring.fingerprint() != self.settled.fingerprint() and (
                self._retry_at is None or self._clock.seconds() >= self._retry_at):
            await self._pass(self.settled, ring)

    # -- a pass ------------------------------------------------------------------

    async def _pass(self, old, new):
        target, source = new.fingerprint(), old.fingerprint()
        cursor = self.cursor
        after = cursor["after"] if cursor and (cursor["ring"], cursor["from"]) == (
            target, source) else ""
        self.counters["passes"] += 1
        self.progress, self._saved_at = 0.0, self._clock.seconds()
        undone = ("unplaced", "unplaced_buckets", "kept_copies")
        before = {name: self.counters[name] for name in undone}
        self.log.info("rebalance: moving data from ring {old} to ring {new}{resumed}",
                      old=source, new=target, resumed=f" (chunks resuming after {after})"
                      if after else "")
        # Records first, each attempt: they are small, and until a bucket's
        # new owner has them, listings through it disagree on every key
        # (each then costs a quorum read) while the chunk walk can take hours.
        if self._tables is not None and not await self._move_records(old, new, target):
            self.progress = None
            return
        while True:
            if self._stopping or self._cluster.ring.fingerprint() != target:
                self.progress = None
                return
            directory = await self._chunks.run(
                lambda: next(self._chunks.leaf_directories(after), None))
            if directory is None:
                break
            files = await self._chunks.run(lambda: list(self._chunks.stored_hashes(directory)))
            for digest, _, _ in files:
                if digest is not None:
                    await self._place(digest, old, new)
            after = directory
            self.progress = int(directory.replace("/", ""), 16) / 0x10000
            self.cursor = {"ring": target, "from": source, "after": after}
            if self._clock.seconds() - self._saved_at >= self.save_interval:
                await self._save()
        self.counters["passes_completed"] += 1
        self.last_pass = {"ring": target, "finished": self._clock.seconds(),
                          **{name: self.counters[name] - before[name] for name in undone}}
        self.cursor, self.progress = None, None
        if any(self.last_pass[name] for name in undone):
            # The settled ring stays: the next pass retries what is left.
            self._retry_at = self._clock.seconds() + self.retry_seconds
            await self._save()
            self.log.warn("rebalance: a pass for ring {new} left {left}; another runs in "
                          "{retry:.0f} s", new=target, retry=self.retry_seconds,
                          left={name: self.last_pass[name] for name in undone})
            return
        self.settled = new
        self._cluster.previous_ring = None
        await self._save()
        self.log.info("rebalance: data placed for ring {new}", new=target)

    async def _place(self, digest, old, new):
        replication = ReplicatedChunks.replication
        old_owners, new_owners = old.owners(digest, replication), new.owners(digest, replication)
        if set(old_owners) == set(new_owners):
            return
        self.counters["chunks_changed"] += 1
        local = self._cluster.local.id
        if local not in new_owners:
            placed = [await self._ensure(owner, digest) for owner in new_owners]
            if all(placed):
                await self._drop(digest)
            else:
                self.counters["unplaced"] += 1
            return
        if self._sends(old_owners, new_owners):
            for owner in new_owners:
                if owner not in old_owners and not await self._ensure(owner, digest):
                    self.counters["unplaced"] += 1

    def _sends(self, old_owners, new_owners):
        """Whether this node (an owner that stays) sends the added copies."""
        alive = self._cluster.is_alive
        if any(alive(m) for m in old_owners if m not in new_owners):
            return False
        staying = [m for m in old_owners if m in new_owners and alive(m)]
        return bool(staying) and staying[0] == self._cluster.local.id

    async def _clear_strays(self, ring):
        """Pass each stray on to its owners in ``ring`` and drop it; what
        cannot be placed now (an owner down) is tried again
        ``retry_seconds`` later."""
        now = self._clock.seconds()
        if not self.strays or (self._strays_retry_at is not None
                               and now < self._strays_retry_at):
            return
        local, unplaced = self._cluster.local.id, set()
        for digest in list(self.strays):
            if self._stopping:
                return
            self.strays.discard(digest)
            owners = ring.owners(digest, ReplicatedChunks.replication)
            if local in owners:
                continue
            if all([await self._ensure(owner, digest) for owner in owners]):
                if await self._drop(digest):
                    self.counters["strays_dropped"] += 1
            else:
                unplaced.add(digest)
        self.counters["strays_unplaced"] += len(unplaced)
        self.strays |= unplaced
        self._strays_retry_at = now + self.retry_seconds if unplaced else None

    async def _ensure(self, owner, digest):
        """Whether ``owner`` holds an intact copy of ``digest`` now (sent
        from here if it lacked one)."""
        if owner == self._cluster.local.id:
            return True
        if not self._cluster.is_alive(owner):
            return False
        try:
            response = await self._cluster.call(owner, "chunk.has", {"hash": digest.hex()})
            if response.result.get("has"):
                return True
            data = await self._chunks.get_chunk(digest)
            await self._cluster.call(owner, "chunk.put", {"hash": digest.hex()}, data)
        except (ChunkMissing, ChunkCorrupted) as e:
            # This copy is bad: the scrubber sets it aside; another owner
            # places a good one.
            self.log.warn("rebalance: chunk {hash} unreadable here ({why})",
                          hash=digest.hex(), why=str(e))
            return False
        except RpcError as e:
            self.log.info("rebalance: chunk {hash} not placed on {owner} ({why})",
                          hash=digest.hex(), owner=owner, why=str(e))
            return False
        self.counters["moved_chunks"] += 1
        self.counters["moved_bytes"] += len(data)
        await deferLater(self._clock, len(data) / self.rate, lambda: None)
        return True

    async def _move_records(self, old, new, target):
        """Send the records of every bucket whose owners changed to the
        added owners (when this node is the chosen sender); False if the
        ring changed or the node stops meanwhile."""
        local = self._cluster.local.id
        replication = PartitionedTable.replication
        for bucket in await self._tables.buckets_held():
            if self._stopping or self._cluster.ring.fingerprint() != target:
                return False
            key = bucket_key(bucket)
            old_owners, new_owners = old.owners(key, replication), new.owners(key, replication)
            added = [m for m in new_owners if m not in old_owners and m != local]
            if not added:
                continue
            self.counters["buckets_changed"] += 1
            if local in new_owners and not self._sends(old_owners, new_owners):
                continue
            targets = [m for m in added if self._cluster.is_alive(m)]
            self.counters["unplaced_buckets"] += len(added) - len(targets)
            async for table, entry in self._tables.partition_entries(bucket):
                for owner in list(targets):
                    try:
                        await self._cluster.call(owner, f"table.{table.name}.apply", {},
                                                 json_body(entry))
                    except RpcError as e:
                        self.log.warn("rebalance: bucket {bucket}'s records not placed on "
                                      "{owner} ({why})", bucket=bucket, owner=owner,
                                      why=str(e))
                        targets.remove(owner)
                        self.counters["unplaced_buckets"] += 1
                        continue
                    self.counters["moved_records"] += 1
        return True

    async def _drop(self, digest):
        """Delete this node's copy of a chunk it no longer owns, now that its
        owners hold it; whether it was deleted."""
        if self._chunks.is_pinned(digest) or await self._hints.holds_chunk(digest):
            self.counters["kept_copies"] += 1
            return False
        if await self._chunks.delete_chunk(digest, math.inf) is None:
            return False
        self.counters["dropped_copies"] += 1
        return True

    def placed_ring(self):
        """The ring every chunk and record is placed for: the settled ring
        once it is the ring in use; None while data moves to a new one (or
        before a first ring settled)."""
        if self.settled is not None and \
                self.settled.fingerprint() == self._cluster.ring.fingerprint():
            return self.settled
        return None

    def drained(self):
        """Whether this node drained: a completed pass for a ring without
        it placed every chunk and bucket elsewhere and kept no copy, so it
        holds no last copy of anything."""
        last, ring = self.last_pass, self._cluster.ring
        return (self._cluster.local.id not in ring and last is not None
                and last["ring"] == ring.fingerprint()
                and not (last["unplaced"] or last["unplaced_buckets"] or last["kept_copies"]))

    # -- status ------------------------------------------------------------------

    def status(self):
        """State and counters for ``/_z4/status``: ``state`` is ``settled``,
        ``waiting`` (the ring changed; a pass starts once it is stable) or
        ``moving`` (with ``progress``, 0 to 1)."""
        ring = self._cluster.ring
        settled = self.settled.fingerprint() if self.settled is not None else None
        state = ("moving" if self.progress is not None else
                 "settled" if settled == ring.fingerprint() else "waiting")
        return {"state": state, "progress": self.progress, "settled_ring": settled,
                "ring": ring.fingerprint(), "rate": self.rate, **self.counters,
                "last_pass": self.last_pass, "draining": self._cluster.draining,
                "drained": self.drained(), "job": self._job.status()}
