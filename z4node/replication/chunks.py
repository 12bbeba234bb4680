"""Chunks on their ring owners: the replicated chunk manager (DESIGN.md, "A
replicated chunk manager"; Garage's ``block`` crate is the model).

Owns placing a chunk on ``owners(hash, 3)`` with a quorum write, reading it
back from whichever owner has a good copy, and the peer operations that
serve both. A chunk is named by the BLAKE3 hash of its bytes, so every copy
that crosses the network is checked against its name before it is kept or
returned: a peer that sends wrong bytes for a hash (rot on its disk, a bug,
a lie) costs one more call, never a wrong answer.

- **Put**: the chunk goes to every owner (this node's store when it is
  one) and the put returns once a majority of min(3, layout) *true owners*
  hold it durably; fewer, and it raises
  :class:`~z4node.replication.errors.QuorumNotReached`. While data moves
  to a new ring, the chunk's owners in the ring it moves from take it too,
  and a majority of them must hold it as well (as record writes do,
  :mod:`z4node.replication.table`): reads still ask them, and if the
  change is undone they are the owners again.
  An owner that membership says is down is not called; an owner that is
  down or does not answer gets a hint instead (:mod:`z4node.replication.hints`),
  which never counts toward the quorum.
- **Get**: this node's copy first if it has one, then the owners in ring
  order, then the owners in the ring whose data is still moving to the
  current one (``cluster.previous_owners``, see
  :mod:`z4node.replication.rebalance`), then the nodes the DHT names as
  providers of the hash (hint holders); each remote copy is verified, and a
  bad or missing one moves on to the next. None good:
  :class:`~z4node.storage.chunks.ChunkMissing`. An owner that had to fetch
  its own chunk (it was down when the chunk was written, or its copy
  rotted) keeps the good copy (read repair), without delaying the read; a
  copy found off the owners is sent on to them too.
- **Heal**: the scrubber's way to replace a copy that rotted on this node:
  the same search as a get, and the good copy stored before it returns.

Chunks travel in plaintext inside the peer channel, which is encrypted;
each node seals what it stores under its own node key (at-rest encryption
stays per node). SSE-C chunks are ciphertext already, named by the hash of
that ciphertext, and travel as they are.
"""

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from z4node.cluster.channel import CallError, RemoteError, Reply, RpcError
from z4node.replication.errors import QuorumNotReached, quorum_successes, require_majorities
from z4node.replication.table import moving_from, takes_moving_writes
from z4node.storage.chunks import CHUNK_SIZE, ChunkCorrupted, ChunkMissing, chunk_hash

# The largest chunk accepted from a peer: 4 MiB of plaintext, or the same
# sealed for SSE-C (a nonce and a tag more).
MAX_CHUNK_BYTES = CHUNK_SIZE + 1024


class ReplicatedChunks:
    """Chunk placement and retrieval over the ring (see the module docstring).

    ``store`` is this node's :class:`~z4node.storage.chunks.ChunkStore` (or
    anything with its ``put_chunk``/``get_chunk``); ``cluster`` what the
    peer channel and the ring offer (``owners``, ``serve``, ``call``,
    ``local``, ``is_alive``, ``previous_owners``, ``dht``); ``handoff`` the node's
    :class:`~z4node.replication.hints.HintedHandoff` (None: no hints).
    """

    log = Logger()

    replication = 3

    def __init__(self, store, cluster, handoff=None):
        self.store = store
        self._cluster = cluster
        self._handoff = handoff
        self.counters = {"puts": 0, "gets": 0, "remote_gets": 0, "bad_copies": 0,
                         "missing": 0, "quorum_failures": 0, "repaired": 0, "puts_while_moving": 0,
                         "found_on_previous_owners": 0, "found_through_dht": 0}
        # Chunks peers put here though this node does not own them in its
        # ring (a write while data moves): the rebalancer's to clear.
        self.strays = set()
        cluster.serve("chunk.put", self._serve_put)
        cluster.serve("chunk.get", self._serve_get)
        cluster.serve("chunk.has", self._serve_has)

    def owners(self, digest):
        return self._cluster.owners(digest, self.replication)

    # -- what the object layer uses of a chunk store, over the ring --------------

    def run(self, fn, *args):
        """Run ``fn`` on the chunk I/O pool."""
        return self.store.run(fn, *args)

    def pin(self, digest):
        self.store.pin(digest)

    def unpin(self, digest):
        self.store.unpin(digest)

    def put_chunk(self, digest, data):
        return Deferred.fromCoroutine(self.put(digest, data))

    def get_chunk(self, digest, then=None):
        """The verified bytes of a chunk from wherever a copy is, or
        ``then(bytes)`` computed on the chunk I/O pool."""
        return Deferred.fromCoroutine(self.get(digest, then))

    # -- put ---------------------------------------------------------------------

    async def put(self, digest, data):
        """Store ``data`` (named ``digest``) on its owners; returns once a
        majority of them hold it (and, while data moves, a majority of its
        owners in the ring it moves from), else QuorumNotReached."""
        self.counters["puts"] += 1
        owners = self.owners(digest)
        previous = moving_from(self._cluster, digest, owners)
        sets = [owners, previous] if previous else [owners]
        calls = {owner: self._put_at(owner, owners, digest, data) for owner in owners}
        calls.update({member: self._put_previous(member, digest, data) for member in previous
                      if member not in owners})
        if previous:
            self.counters["puts_while_moving"] += 1
        acked = await quorum_successes(calls, sets)
        try:
            require_majorities(acked, sets, f"chunk {digest.hex()}")
        except QuorumNotReached:
            self.counters["quorum_failures"] += 1
            raise

    def _put_previous(self, member, digest, data):
        """Put the chunk on one of its owners in the ring data is moving
        from, which reads still ask and which may yet be the ring data is
        placed for (no hint if it is down: it is leaving the chunk; nothing
        if it is leaving the ring, see ``takes_moving_writes``)."""
        if not takes_moving_writes(self._cluster, member):
            return fail(RpcError(f"chunk.put: {member} is down or leaving the ring"))
        d = self._store_at(member, digest, data)
        if member == self._cluster.local.id:
            d.addCallback(lambda _: self.strays.add(digest))
        return d

    def _store_at(self, member, digest, data):
        """Put the chunk on ``member``: this node's store, or a call."""
        if member == self._cluster.local.id:
            return self.store.put_chunk(digest, data)
        return Deferred.fromCoroutine(self._cluster.call(
            member, "chunk.put", {"hash": digest.hex()}, data))

    def _put_at(self, owner, owners, digest, data):
        """Put the chunk on one owner; if it is down or does not answer, a
        hint goes to a holder in the background (and the put still fails:
        a hint is not an owner's copy)."""
        if owner == self._cluster.local.id:
            return self._store_at(owner, digest, data)
        if not self._cluster.is_alive(owner):
            self._hand_off(owner, owners, digest, data)
            return fail(RpcError(f"chunk.put: {owner} is down"))
        d = self._store_at(owner, digest, data)

        def unreached(failure):
            if failure.check(RpcError) and not failure.check(RemoteError):
                self._hand_off(owner, owners, digest, data)
            return failure
        return d.addErrback(unreached)

    def _hand_off(self, owner, owners, digest, data):
        if self._handoff is not None:
            self._handoff.hand_off_chunk(owner, owners, digest, data)

    async def _serve_put(self, peer_id, args, body):
        digest = digest_arg(args)
        data = await received_chunk(body, digest, self.store.run)
        await self.store.put_chunk(digest, data)
        if self._cluster.local.id not in self.owners(digest):
            # Sent here as an owner in the ring data moves from: the
            # rebalancer passes it on and drops it (Rebalancer.strays).
            self.strays.add(digest)
        return Reply({})

    # -- get ---------------------------------------------------------------------

    async def get(self, digest, then=None):
        """The verified bytes of a chunk, from this node or an owner (or
        ``then(bytes)``, computed on the chunk I/O pool)."""
        self.counters["gets"] += 1
        local = self._cluster.local.id
        try:
            return await self.store.get_chunk(digest, then)
        except (ChunkMissing, ChunkCorrupted):
            if self.owners(digest) == [local]:
                raise
        data = await self._get_elsewhere(digest)
        if local in self.owners(digest):
            self._repair(digest, data)
        return data if then is None else await self.store.run(then, data)

    async def heal(self, digest):
        """Replace this node's missing or damaged copy of a chunk with a
        verified one from another node; ChunkMissing if none has one."""
        data = await self._get_elsewhere(digest)
        await self.store.put_chunk(digest, data)
        self.counters["repaired"] += 1

    async def _get_elsewhere(self, digest):
        """The verified bytes of a chunk from another node: the owners in
        ring order, then the owners in the ring whose data is still moving
        to the current one, then whoever the DHT names (hint holders). A
        copy found off the owners is passed on to the other owners."""
        local = self._cluster.local.id
        owners = self.owners(digest)
        data = await self._fetch_first([m for m in owners if m != local], digest)
        if data is not None:
            return data
        previous = [m for m in self._cluster.previous_owners(digest, self.replication)
                    if m != local and m not in owners]
        data = await self._fetch_first(previous, digest)
        if data is not None:
            self.counters["found_on_previous_owners"] += 1
        else:
            providers = [p for p in await self._providers(digest)
                         if p != local and p not in owners and p not in previous]
            data = await self._fetch_first(providers, digest)
            if data is None:
                self.counters["missing"] += 1
                raise ChunkMissing(digest.hex())
            self.counters["found_through_dht"] += 1
        for owner in owners:
            if owner != local:
                self._put_at(owner, owners, digest, data).addErrback(
                    self._not_passed_on, digest, owner)
        return data

    async def _fetch_first(self, members, digest):
        """The verified bytes of a chunk from the first of ``members`` that
        has a good copy, or None."""
        for member in members:
            data = await self.fetch(member, digest)
            if data is not None:
                return data
        return None

    async def fetch(self, member, digest):
        """The verified bytes of a chunk from ``member``, or None."""
        self.counters["remote_gets"] += 1
        try:
            response = await self._cluster.call(member, "chunk.get", {"hash": digest.hex()})
            data = await response.body.read_all(MAX_CHUNK_BYTES)
        except RpcError as e:
            self.log.info("chunk {hash}: no copy from {member} ({why})",
                          hash=digest.hex(), member=member, why=str(e))
            return None
        if await self.store.run(chunk_hash, data) != digest:
            self.counters["bad_copies"] += 1
            self.log.warn("chunk {hash}: {member} sent bytes that do not hash to it; "
                          "trying the next copy", hash=digest.hex(), member=member)
            return None
        return data

    async def _providers(self, digest):
        """The members the DHT names as holding ``digest`` (hint holders);
        none if the lookup fails."""
        try:
            return sorted(await self._cluster.dht.providers(digest.hex()))
        except Exception as e:
            self.log.info("chunk {hash}: DHT lookup failed ({why})", hash=digest.hex(),
                          why=str(e))
            return []

    def _not_passed_on(self, failure, digest, owner):
        self.log.info("chunk {hash}: passing the copy found off its owners to {owner} "
                      "failed: {why}", hash=digest.hex(), owner=owner,
                      why=failure.getErrorMessage())

    def _repair(self, digest, data):
        """Store a verified copy of a chunk this node owns but lacked (a
        rotted file is replaced), in the background."""
        def failed(failure):
            self.log.warn("chunk {hash}: keeping the copy fetched for repair failed: {why}",
                          hash=digest.hex(), why=failure.getErrorMessage())
        self.counters["repaired"] += 1
        self.store.put_chunk(digest, data).addErrback(failed)

    async def _serve_get(self, peer_id, args, body):
        digest = digest_arg(args)
        try:
            data = await self.store.get_chunk(digest)
        except ChunkMissing:
            raise CallError("NoSuchChunk", digest.hex()) from None
        except ChunkCorrupted:
            raise CallError("ChunkCorrupted", digest.hex()) from None
        return Reply({}, data)

    async def _serve_has(self, peer_id, args, body):
        return Reply({"has": await self.store.has_chunk(digest_arg(args))})

    def status(self):
        return dict(self.counters)


def digest_arg(args):
    try:
        digest = bytes.fromhex(args["hash"])
    except (KeyError, TypeError, ValueError):
        raise CallError("BadRequest", "hash (hex) is required") from None
    if len(digest) != 32:
        raise CallError("BadRequest", "a chunk hash is 32 bytes")
    return digest


async def received_chunk(body, digest, run):
    """The bytes of chunk ``digest`` a peer sent as a call's ``body``,
    checked against the name (hashed through ``run``, the chunk I/O pool);
    CallError if they are missing, too long or not that chunk."""
    if body is None:
        raise CallError("BadRequest", "the call needs the chunk as its body")
    try:
        data = await body.read_all(MAX_CHUNK_BYTES)
    except RpcError as e:
        raise CallError("TooLarge", str(e)) from None
    if await run(chunk_hash, data) != digest:
        raise CallError("BadDigest", f"the bytes sent do not hash to {digest.hex()}")
    return data

