"""The Merkle trees over the chunk set this node shares with each other
owner: what anti-entropy of chunks compares
(:mod:`z4node.replication.chunk_sync`; DESIGN.md, "Anti-entropy").

A chunk file belongs to this node's tree *for a peer* when both are among
the chunk's owners in the ring the data is placed for (the settled ring of
:mod:`z4node.replication.rebalance`). The two owners' trees for each other
then cover the same chunks, and their roots are equal exactly when both
hold the same set. The trees have the shape of the record trees
(:mod:`z4node.storage.merkle`): 16 children a node, leaf buckets named by
``DEPTH`` hex digits, a node hashing to the XOR of its leaves' hashes. Here
the leaf bucket of a chunk is the start of its own hex name (so bucket
``abc`` is the files in directories ``ab/c0`` to ``ab/cf``) and a leaf's
hash is the first 8 bytes of the chunk's name.

Kept in memory, up to date on every change without a database write: the
leaf buckets of a top directory (two hex digits, 16 leaf buckets) are
computed from its file names (one listing of its directories on the chunk
I/O pool, no file read) for every peer at once, the first time
anti-entropy asks after a start; from then on the store tells
(:attr:`ChunkStore.on_change`) each file that appeared or went away, and
its leaf hash is XORed in or out of the computed buckets (the same
operation both ways). So the first pass after a start lists every chunk
directory once, and no pass after it lists any. A change that lands while
its directory is being listed makes that listing's result unusable; the
directory is listed again when next asked. A ring change drops every
computed bucket (ownership changed), and they are listed again. A file
removed behind the node's back (by hand) is seen at the next start.
"""

from z4node.replication.chunks import ReplicatedChunks
from z4node.storage.merkle import DEPTH

TOP_DIRECTORIES = 256


def leaf_hash(digest):
    """A chunk's leaf hash: the first 8 bytes of its name (a signed integer,
    as the record trees' hashes)."""
    return int.from_bytes(digest[:8], "big", signed=True)


class ChunkTrees:
    """This node's chunk-set trees, one per peer (see the module docstring).

    ``store`` is the node's :class:`~z4node.storage.chunks.ChunkStore`;
    ``local_id`` this node's id; ``placed_ring()`` the ring the data is
    placed for, or None while it moves to a new one (then there is no tree
    to compare).
    """

    def __init__(self, store, local_id, placed_ring):
        self._store = store
        self._local = local_id
        self.placed_ring = placed_ring
        self._changes = [0] * TOP_DIRECTORIES
        # top directory -> (ring, its fingerprint,
        # {peer: [the 16 leaf buckets' hashes]})
        self._computed = {}
        self.counters = {"directories_listed": 0}
        store.on_change = self.changed

    def changed(self, digest):
        """A chunk file appeared or went away: toggle it in the computed
        buckets of its top directory, if they are computed."""
        top = digest[0]
        self._changes[top] += 1
        computed = self._computed.get(top)
        if computed is not None:
            ring, _, buckets = computed
            self._toggle(ring, buckets, digest)

    async def node_hashes(self, ring, peer, nodes):
        """``{node: hash}`` of the tree shared with ``peer`` in ``ring``,
        for each of the tree ``nodes`` (hex prefixes)."""
        fingerprint = ring.fingerprint()
        found = {}
        for node in nodes:
            value = 0
            for top in _tops_under(node):
                buckets = (await self._top(ring, fingerprint, top)).get(peer)
                if buckets is None:
                    continue
                for index in _buckets_under(node, top):
                    value ^= buckets[index]
            found[node] = value
        return found

    async def leaves(self, ring, peer, prefixes):
        """The chunks shared with ``peer`` in ``ring`` in the leaf buckets
        ``prefixes``: a set of hashes."""
        return await self._store.run(self._shared_in, ring, peer, prefixes)

    def _shared_in(self, ring, peer, prefixes):
        shared = set()
        for prefix in prefixes:
            for digest in self._store.hashes_named(prefix):
                if peer in self._other_owners(ring, digest):
                    shared.add(digest)
        return shared

    async def _top(self, ring, fingerprint, top):
        """The leaf buckets' hashes of one top directory, per peer."""
        changes = self._changes[top]
        computed = self._computed.get(top)
        if computed is not None and computed[1] == fingerprint:
            return computed[2]
        buckets = await self._store.run(self._compute_top, ring, top)
        self.counters["directories_listed"] += 1
        # A file that changed while the listing ran may or may not be in
        # it: keep the result only if nothing did.
        if self._changes[top] == changes:
            self._computed[top] = (ring, fingerprint, buckets)
        return buckets

    def _compute_top(self, ring, top):
        buckets = {}
        for digest in self._store.hashes_named(f"{top:02x}"):
            self._toggle(ring, buckets, digest)
        return buckets

    def _other_owners(self, ring, digest):
        """The chunk's other owners in ``ring`` if this node is one; else
        none (the chunk is in no tree of this node)."""
        owners = ring.owners(digest, ReplicatedChunks.replication)
        return [m for m in owners if m != self._local] if self._local in owners else []

    def _toggle(self, ring, buckets, digest):
        """XOR a chunk's leaf hash into ``buckets`` (per peer) for each
        other owner it shares with this node in ``ring``."""
        leaf = leaf_hash(digest)
        for peer in self._other_owners(ring, digest):
            row = buckets.get(peer)
            if row is None:
                row = buckets[peer] = [0] * 16
            row[digest[1] >> 4] ^= leaf


def _tops_under(node):
    """The top directories (0-255) under a tree node."""
    if len(node) >= 2:
        return [int(node[:2], 16)]
    if len(node) == 1:
        first = int(node, 16) << 4
        return range(first, first + 16)
    return range(TOP_DIRECTORIES)


def _buckets_under(node, top):
    """The indexes (0-15) of a top directory's leaf buckets under a node."""
    if len(node) == DEPTH:
        return [int(node[2], 16)]
    return range(16)
