"""Anti-entropy of chunk sets: two owners compare the trees of the chunks
they should both hold and copy to each the chunks it lacks (DESIGN.md,
"Anti-entropy"; issue 13). A chunk an owner lost with a hint, missed while
partitioned, or deleted by an operator comes back here even if nobody
reads it.

Owns the sync of this node's chunk set with each other owner, run in each
anti-entropy pass (:class:`~z4node.replication.antientropy.AntiEntropy`),
and the peer operations it uses. The trees are
:class:`~z4node.replication.chunk_tree.ChunkTrees`.

- A pass syncs with every other live member of the ring the data is placed
  for. While data moves to a new ring (or the two nodes place data for
  different rings) there is nothing to compare: rebalancing is what
  places chunks then, and the sync is skipped.
- A sync walks the two trees down to the leaf buckets that differ (one
  call a level, :func:`~z4node.replication.antientropy.differing_buckets`),
  then, ``max_prefixes`` buckets at a time, fetches the peer's chunk
  hashes in them (32 bytes each) and asks the cluster which of the
  chunks only one side holds are in use (the question garbage collection
  asks, :mod:`z4node.replication.references`): a chunk no version uses is
  garbage on its way out on the other side, not a loss, and is left to the
  collector. When the answer is unknown (a member is down), every such
  chunk is copied: a copy too many is collected later; a copy too few is
  a loss.
- This node fetches from the peer each chunk it lacks (verified against
  its name) and sends the peer each chunk it lacks, one at a time, at most
  ``rate`` bytes/s. So calls and bytes grow with the difference, not with
  the chunk set.
"""

from twisted.internet.task import deferLater
from twisted.logger import Logger

from z4node.cluster.channel import CallError, RemoteError, Reply, RpcError
from z4node.replication.antientropy import differing_buckets, tree_nodes
from z4node.replication.references import unpack_hashes
from z4node.replication.table import json_body, read_json, response_json
from z4node.storage.chunks import HASH_SIZE, ChunkCorrupted, ChunkMissing
from z4node.storage.merkle import DEPTH

MiB = 1024 * 1024
RING_DIFFERS = "RingDiffers"


class ChunkSync:
    """The chunk-set half of anti-entropy (see the module docstring).

    ``trees`` are this node's ChunkTrees; ``chunks`` its ReplicatedChunks
    (its store, and verified fetches from a member); ``references`` its
    ChunkReferences.
    """

    log = Logger()

    rate = 32 * MiB  # bytes/s of chunks copied
    max_prefixes = 64  # leaf buckets whose hashes one call asks for
    # The hashes of one call's leaf buckets: 1M chunks in 64 buckets each
    # way (a node holding about 64M chunks).
    max_leaf_bytes = 32 * MiB

    def __init__(self, clock, cluster, trees, chunks, references, rate=None):
        self._clock = clock
        self._cluster = cluster
        self._trees = trees
        self._chunks = chunks
        self._references = references
        if rate is not None:
            self.rate = rate
        self.counters = {"syncs": 0, "sync_failures": 0, "skipped": 0, "differing": 0,
                         "calls": 0, "hashes_read": 0,
                         "chunks_pulled": 0, "chunks_pushed": 0, "bytes_pulled": 0,
                         "bytes_pushed": 0, "garbage_left": 0, "not_copied": 0}
        # Each peer's last sync: {peer: {"synced", "copied", "failed"}}.
        self.synced = {}
        cluster.serve("ae.chunks.nodes", self._serve_nodes)
        cluster.serve("ae.chunks.leaves", self._serve_leaves)

    def peers(self):
        """``(ring, members)``: the ring data is placed for and the other
        live members to sync with; ``(None, [])`` while data moves."""
        ring = self._trees.placed_ring()
        if ring is None:
            self.counters["skipped"] += 1
            return None, []
        for gone in set(self.synced) - set(ring.member_ids):
            del self.synced[gone]
        local = self._cluster.local.id
        return ring, [peer for peer in ring.member_ids
                      if peer != local and self._cluster.is_alive(peer)]

    async def sync_with(self, ring, peer):
        """Sync with one member; the chunks copied. A sync that fails (the
        peer went away) is counted, logged and recorded in :attr:`synced`;
        the next pass tries again."""
        before = self.counters["chunks_pulled"] + self.counters["chunks_pushed"]
        state = self.synced[peer] = {"synced": None, "copied": 0, "failed": False}
        try:
            await self.sync(ring, peer)
        except (RpcError, CallError) as e:
            if isinstance(e, RemoteError) and e.code == RING_DIFFERS:
                self.counters["skipped"] += 1
            else:
                self.counters["sync_failures"] += 1
                state["failed"] = True
                self.log.info("anti-entropy: chunks with {peer} failed ({why})", peer=peer,
                              why=str(e))
        state["synced"] = self._clock.seconds()
        state["copied"] = (self.counters["chunks_pulled"] + self.counters["chunks_pushed"]
                           - before)
        return state["copied"]

    async def sync(self, ring, peer):
        """Make this node's and ``peer``'s shares of the chunk set equal."""
        self.counters["syncs"] += 1
        fingerprint = ring.fingerprint()

        def mine(nodes):
            return self._trees.node_hashes(ring, peer, nodes)

        def theirs(nodes):
            return self._remote_nodes(peer, fingerprint, nodes)

        buckets = await differing_buckets(mine, theirs)
        if not buckets:
            return
        self.counters["differing"] += 1
        # A batch of leaf buckets at a time, so that a node that lost all
        # its chunks holds one batch's hashes at once, not all of them.
        for start in range(0, len(buckets), self.max_prefixes):
            batch = buckets[start:start + self.max_prefixes]
            here = await self._trees.leaves(ring, peer, batch)
            there = await self._remote_leaves(peer, fingerprint, batch)
            await self._copy_differing(peer, here, there)

    async def _copy_differing(self, peer, here, there):
        """Copy each chunk in use that only one side holds (``here`` or
        ``there``) to the other side."""
        differing = sorted(there ^ here)
        if not differing:
            return
        used = await self._references.in_use(differing)
        for digest in differing:
            if used is not None and digest not in used:
                self.counters["garbage_left"] += 1
            elif digest in there:
                await self._pull(peer, digest)
            else:
                await self._push(peer, digest)

    async def _pull(self, peer, digest):
        data = await self._chunks.fetch(peer, digest)
        if data is None:
            self.counters["not_copied"] += 1
            return
        await self._chunks.store.put_chunk(digest, data)
        self.counters["chunks_pulled"] += 1
        self.counters["bytes_pulled"] += len(data)
        await self._throttle(len(data))

    async def _push(self, peer, digest):
        try:
            data = await self._chunks.store.get_chunk(digest)
        except (ChunkMissing, ChunkCorrupted):
            # Gone since the listing (collected, or set aside by a read).
            self.counters["not_copied"] += 1
            return
        self.counters["calls"] += 1
        await self._cluster.call(peer, "chunk.put", {"hash": digest.hex()}, data)
        self.counters["chunks_pushed"] += 1
        self.counters["bytes_pushed"] += len(data)
        await self._throttle(len(data))

    def _throttle(self, size):
        return deferLater(self._clock, size / self.rate, lambda: None)

    # -- calls ---------------------------------------------------------------------

    async def _remote_nodes(self, peer, fingerprint, nodes):
        self.counters["calls"] += 1
        response = await self._cluster.call(peer, "ae.chunks.nodes", {"ring": fingerprint},
                                            json_body(nodes))
        hashes = await response_json(response)
        if not isinstance(hashes, dict):
            raise RpcError("the tree node hashes are not an object")
        return hashes

    async def _remote_leaves(self, peer, fingerprint, prefixes):
        self.counters["calls"] += 1
        response = await self._cluster.call(peer, "ae.chunks.leaves", {"ring": fingerprint},
                                            json_body(prefixes))
        if response.body is None:
            raise RpcError("the leaves came without a body")
        data = await response.body.read_all(self.max_leaf_bytes)
        if len(data) % HASH_SIZE:
            raise RpcError(f"the leaves are not {HASH_SIZE}-byte hashes")
        self.counters["hashes_read"] += len(data) // HASH_SIZE
        return set(unpack_hashes(data))

    # -- serving -------------------------------------------------------------------

    def _ring(self, peer_id, args):
        """The ring both nodes place data for; CallError if they differ."""
        ring = self._trees.placed_ring()
        if ring is None or ring.fingerprint() != args.get("ring"):
            raise CallError(RING_DIFFERS, "this node places data for another ring, or "
                            "its data is moving")
        if peer_id not in ring:
            raise CallError(RING_DIFFERS, f"{peer_id} owns nothing in this ring")
        return ring

    async def _serve_nodes(self, peer_id, args, body):
        ring = self._ring(peer_id, args)
        nodes = tree_nodes(await read_json(body))
        return Reply({}, json_body(await self._trees.node_hashes(ring, peer_id, nodes)))

    async def _serve_leaves(self, peer_id, args, body):
        ring = self._ring(peer_id, args)
        prefixes = tree_nodes(await read_json(body))
        if len(prefixes) > self.max_prefixes or any(len(p) != DEPTH for p in prefixes):
            raise CallError("BadRequest", f"at most {self.max_prefixes} leaf buckets "
                            f"({DEPTH} hex digits) at a time")
        shared = await self._trees.leaves(ring, peer_id, prefixes)
        return Reply({}, b"".join(sorted(shared)))

    def status(self):
        return dict(self.counters, **self._trees.counters, peers=self.synced)
