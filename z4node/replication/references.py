"""Whether any node still uses a chunk: the question garbage collection asks
the cluster before it deletes a chunk file.

Reference counts are kept where the versions and upload parts are, on their
bucket's owners (the ``chunks`` table of :mod:`z4node.storage.meta`), not
on the chunk's owners. So a chunk file that this node's own counts call
unused may still be used by a version on another node. Before the garbage
collector deletes one, it asks every member of the layout (alive, suspect
or dead: each may hold versions) which of a batch of hashes it uses. A
member uses a chunk when:

- a version or part it holds counts it (refs above zero);
- an upload in progress on it pinned it (it coordinates the upload, and the
  version that will use the chunk is not written yet);
- it holds the chunk as a hint for another node; or
- it holds any hinted table entry: a version held for its owner may use any
  chunk, so such a member answers "all of them" until it has delivered it.

A member that is not alive, or does not answer, leaves the answer unknown,
and nothing in the batch is deleted: the next sweep asks again. Deleting
then stays safe against a write racing the question, because every write
of a chunk's content touches the file and the collector deletes only files
untouched for the grace period (:meth:`ChunkStore.delete_chunk`).

What it costs: one call per other member per batch of up to
``max_hashes`` hashes. A sweep asks about every chunk file its node holds
that no local version uses, so in a cluster of n nodes each sweep sends
about 32 bytes times (n - 1) per such chunk file.
"""

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger

from z4node.cluster.channel import CallError, Reply, RpcError
from z4node.cluster.members import IN_LAYOUT
from z4node.storage.chunks import HASH_SIZE


class ChunkReferences:
    """Answers "which of these chunks do you use" for this node, and asks
    the question of every other member (see the module docstring).

    ``meta`` counts the references of this node's versions and parts;
    ``chunks`` is the node's chunk store (its pins); ``hints`` its
    :class:`~z4node.storage.hint_store.HintStore`.
    """

    log = Logger()

    # Hashes in one call: 32 KiB of body each way at most.
    max_hashes = 1024

    def __init__(self, cluster, meta, chunks, hints):
        self._cluster = cluster
        self._meta = meta
        self._chunks = chunks
        self._hints = hints
        self.counters = {"asked": 0, "undecided": 0}
        cluster.serve("chunk.referenced", self._serve_referenced)

    async def in_use(self, hashes):
        """The subset of ``hashes`` this node or another uses, or None when
        a member is down or does not answer (then nothing may be deleted).
        This node is asked last, so a version that arrived here while the
        others answered counts."""
        elsewhere = await self.used_elsewhere(hashes)
        if elsewhere is None:
            return None
        return elsewhere | await self.used_here(hashes)

    async def used_here(self, hashes):
        """The subset of ``hashes`` this node uses."""
        used = await self._meta.referenced_chunks(hashes)
        held, holds_entries = await self._hints.held_for_others(hashes)
        if holds_entries:
            return set(hashes)
        return used | held | {h for h in hashes if self._chunks.is_pinned(h)}

    async def used_elsewhere(self, hashes):
        """The subset of ``hashes`` some other member uses, or None when a
        member is down or does not answer (then nothing may be deleted)."""
        local = self._cluster.local.id
        others = [m.id for m in self._cluster.membership.members(IN_LAYOUT) if m.id != local]
        if any(not self._cluster.is_alive(member) for member in others):
            self.counters["undecided"] += len(hashes)
            return None
        used = set()
        for start in range(0, len(hashes), self.max_hashes):
            batch = hashes[start:start + self.max_hashes]
            self.counters["asked"] += len(batch)
            try:
                answers = await gatherResults(
                    [Deferred.fromCoroutine(self._ask(member, batch)) for member in others],
                    consumeErrors=True)
            except FirstError as e:
                self.log.info("gc: a member did not say which chunks it uses ({why}); "
                              "nothing of this batch is deleted",
                              why=e.subFailure.getErrorMessage())
                self.counters["undecided"] += len(hashes) - start
                return None
            for answer in answers:
                used |= answer
        return used

    async def _ask(self, member, hashes):
        response = await self._cluster.call(member, "chunk.referenced", {},
                                            b"".join(hashes))
        if response.body is None:
            raise RpcError(f"chunk.referenced: {member} sent no body")
        return set(unpack_hashes(await response.body.read_all(HASH_SIZE * self.max_hashes)))

    async def _serve_referenced(self, peer_id, args, body):
        if body is None:
            raise CallError("BadRequest", "the call needs the hashes as its body")
        try:
            data = await body.read_all(HASH_SIZE * self.max_hashes)
        except RpcError as e:
            raise CallError("TooLarge", str(e)) from None
        if len(data) % HASH_SIZE:
            raise CallError("BadRequest", f"the body is not {HASH_SIZE}-byte hashes")
        hashes = unpack_hashes(data)
        used = await self.used_here(hashes)
        return Reply({}, b"".join(h for h in hashes if h in used))

    def status(self):
        return dict(self.counters)


def unpack_hashes(data):
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
