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

Kept up to date without a database write per chunk: the store tells
(:attr:`ChunkStore.on_change`) which file appeared or went away, and that
counts a change of its top directory (two hex digits, 16 leaf buckets). The
leaf buckets of a top directory are computed from its file names (one
listing of its directories on the chunk I/O pool, no file read) for every
peer at once, the first time anti-entropy asks and again only after a
change there. So the first pass after a start lists every chunk directory
once, and a pass after that lists only the top directories that changed
since the one before. A ring change drops every computed bucket.
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
        # top directory -> (changes counted, ring fingerprint,
        # {peer: [the 16 leaf buckets' hashes]})
        self._computed = {}
        self.counters = {"directories_listed": 0}
        store.on_change = self.changed

    def changed(self, digest):
        """A chunk file appeared or went away."""
        self._changes[digest[0]] += 1

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
                owners = ring.owners(digest, ReplicatedChunks.replication)
                if self._local in owners and peer in owners:
                    shared.add(digest)
        return shared

    async def _top(self, ring, fingerprint, top):
        """The leaf buckets' hashes of one top directory, per peer."""
        changes = self._changes[top]
        computed = self._computed.get(top)
        if computed is not None and computed[:2] == (changes, fingerprint):
            return computed[2]
        buckets = await self._store.run(self._compute_top, ring, top)
        self.counters["directories_listed"] += 1
        # A file that changed while the listing ran may or may not be in
        # it: keep the result only if nothing did.
        if self._changes[top] == changes:
            self._computed[top] = (changes, fingerprint, buckets)
        return buckets

    def _compute_top(self, ring, top):
        buckets = {}
        for digest in self._store.hashes_named(f"{top:02x}"):
            owners = ring.owners(digest, ReplicatedChunks.replication)
            if self._local not in owners:
                continue
            leaf = leaf_hash(digest)
            for peer in owners:
                if peer != self._local:
                    row = buckets.get(peer)
                    if row is None:
                        row = buckets[peer] = [0] * 16
                    row[digest[1] >> 4] ^= leaf
        return buckets


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
