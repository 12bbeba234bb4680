"""This node's queue of hints: copies it holds for owners that were down or
did not answer when something they own was written (hinted handoff,
:mod:`z4node.replication.hints`).

Owns the ``hints`` table of the metadata database. A hint names its target
(a member id) and holds either a chunk, whose bytes are in this node's
chunk store under its hash, or a replicated-table entry (JSON). Entries can
carry an object's bytes (inline objects), so they are sealed at rest the
way inline objects are. A hint is durable once :meth:`HintStore.add` fires,
so it survives a restart; a chunk hinted twice for the same target is one
hint.
"""

import json
from dataclasses import dataclass

from z4node.storage.crypto import KeyUnavailable, Tampered


@dataclass(frozen=True)
class Hint:
    """One hint. ``chunk`` is the hash of a chunk hint (None for an entry);
    ``table`` and ``entry`` are an entry hint's table name and entry (entry
    None if it could not be opened: the node key that sealed it is gone)."""

    id: int
    target: str
    chunk: bytes | None
    table: str | None
    entry: dict | None
    size: int
    created: float


class HintStore:
    """The ``hints`` table (see the module docstring); every method returns
    a Deferred."""

    def __init__(self, meta):
        self._meta = meta

    def add_chunk(self, target, digest, size, now):
        def write(c):
            c.execute("INSERT OR IGNORE INTO hints (target, chunk, size, created)"
                      " VALUES (?, ?, ?, ?)", (target, digest, size, now))
        return self._meta.db.write(write)

    def add_entry(self, target, table, entry, now):
        data = json.dumps(entry, separators=(",", ":")).encode("utf-8")
        at_rest = self._meta.at_rest

        def write(c):
            # Sealed inside the transaction, as every wrap is (rotation's rule).
            sealed = at_rest.seal_inline(data)
            c.execute("INSERT INTO hints (target, tbl, entry, size, created)"
                      " VALUES (?, ?, ?, ?, ?)", (target, table, sealed, len(data), now))
        return self._meta.db.write(write)

    def batch(self, target, after_id, limit):
        """Up to ``limit`` hints for ``target`` with ids above ``after_id``,
        oldest first."""
        at_rest = self._meta.at_rest

        def read(c):
            rows = c.execute(
                "SELECT id, target, chunk, tbl, entry, size, created FROM hints"
                " WHERE target=? AND id>? ORDER BY id LIMIT ?",
                (target, after_id, limit)).fetchall()
            return [_hint(at_rest, *row) for row in rows]
        return self._meta.db.read(read)

    def remove(self, ids):
        def write(c):
            c.executemany("DELETE FROM hints WHERE id=?", [(i,) for i in ids])
        return self._meta.db.write(write)

    def expire(self, before):
        """Drop every hint created before ``before``; (how many were
        dropped, the hashes of the chunks among them)."""
        def write(c):
            chunks = [row[0] for row in c.execute(
                "SELECT DISTINCT chunk FROM hints WHERE created<? AND chunk IS NOT NULL",
                (before,))]
            dropped = c.execute("DELETE FROM hints WHERE created<?", (before,)).rowcount
            return dropped, chunks
        return self._meta.db.write(write)

    def holds_chunk(self, digest):
        """Whether any hint still needs this node's copy of ``digest``."""
        def read(c):
            return c.execute("SELECT 1 FROM hints WHERE chunk=? LIMIT 1",
                             (digest,)).fetchone() is not None
        return self._meta.db.read(read)

    def held_for_others(self, hashes):
        """``(chunks, entries)``: the subset of ``hashes`` this node holds as
        hinted chunks, and whether it holds any hinted table entry (a
        version held for its owner may use any chunk)."""
        def read(c):
            held = {h for h in hashes if c.execute(
                "SELECT 1 FROM hints WHERE chunk=? LIMIT 1", (h,)).fetchone()}
            entries = c.execute(
                "SELECT 1 FROM hints WHERE entry IS NOT NULL LIMIT 1").fetchone()
            return held, entries is not None
        return self._meta.db.read(read)

    def queues(self):
        """``{target: {"count", "bytes", "oldest"}}`` (oldest: when the
        oldest hint was made, unix seconds)."""
        def read(c):
            return {target: {"count": count, "bytes": size, "oldest": oldest}
                    for target, count, size, oldest in c.execute(
                        "SELECT target, count(*), sum(size), min(created) FROM hints"
                        " GROUP BY target ORDER BY target")}
        return self._meta.db.read(read)


def _hint(at_rest, id, target, chunk, table, sealed, size, created):
    entry = None
    if sealed is not None:
        try:
            entry = json.loads(at_rest.open_inline(sealed))
        except (KeyUnavailable, Tampered, ValueError):
            entry = None
    return Hint(id, target, chunk, table, entry, size, created)
