"""The Merkle trees over this node's object versions, one per bucket, kept
up to date inside every write transaction that changes a version, so that
anti-entropy compares replicas without scanning them
(:mod:`z4node.replication.antientropy`; DESIGN.md, "Anti-entropy").

A *leaf* is one version slot, (key, version id), and says what the slot
holds: a version or a tombstone (a version deleted by its id), and its edit
stamp. An edit stamp is an HLC, unique per edit, so two replicas with equal
leaves hold the same record. Leaves sit in buckets named by the first
``DEPTH`` hex digits of a hash of the slot; each tree node (a prefix of
those digits, the root being ``""``) holds the XOR of the hashes of the
leaves below it, as Cassandra's trees combine rows. So a change updates
``DEPTH + 1`` nodes without reading a sibling, and an empty node is simply
absent. With 16 children a node and ``DEPTH`` 3 there are 4,096 leaf
buckets: about 25 leaves each for 100,000 versions in a bucket.

Tables (in the metadata database): ``merkle_nodes`` (bucket, node, hash)
and ``merkle_leaves`` (bucket, prefix, key, version id, tombstone, stamp).
Every function here runs inside the caller's write transaction.
"""

import hashlib

DEPTH = 3
ROOT = ""

SCHEMA = """
CREATE TABLE IF NOT EXISTS merkle_nodes (
    bucket TEXT NOT NULL, node TEXT NOT NULL, hash INTEGER NOT NULL,
    PRIMARY KEY (bucket, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merkle_leaves (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, key BLOB NOT NULL,
    version_id TEXT NOT NULL, tombstone INTEGER NOT NULL, stamp INTEGER NOT NULL,
    PRIMARY KEY (bucket, key, version_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS merkle_leaves_by_prefix ON merkle_leaves (bucket, prefix);
"""

# node_settings row saying the trees were built from the tables (a data dir
# from before the trees existed gets them built once, at start).
BUILT_SETTING = "merkle_built"


def position(key, version_id):
    """The leaf bucket of a slot: ``DEPTH`` hex digits (``key`` is bytes)."""
    return hashlib.blake2b(key + b"\0" + version_id.encode("utf-8"),
                           digest_size=8).hexdigest()[:DEPTH]


def leaf_hash(key, version_id, tombstone, stamp):
    """A leaf's 64-bit hash (a signed integer, as SQLite stores it)."""
    data = b"\0".join([key, version_id.encode("utf-8"), b"t" if tombstone else b"v",
                       str(stamp).encode("ascii")])
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def change(c, bucket, key, version_id, old, new):
    """The slot ``(key, version_id)`` of ``bucket`` went from ``old`` to
    ``new``, each ``(tombstone, stamp)`` or None (an empty slot)."""
    if old == new:
        return
    prefix = position(key, version_id)
    delta = 0
    if old is not None:
        delta ^= leaf_hash(key, version_id, *old)
        c.execute("DELETE FROM merkle_leaves WHERE bucket=? AND key=? AND version_id=?",
                  (bucket, key, version_id))
    if new is not None:
        delta ^= leaf_hash(key, version_id, *new)
        c.execute("INSERT OR REPLACE INTO merkle_leaves VALUES (?, ?, ?, ?, ?, ?)",
                  (bucket, prefix, key, version_id, int(new[0]), new[1]))
    for length in range(DEPTH + 1):
        node = prefix[:length]
        row = c.execute("SELECT hash FROM merkle_nodes WHERE bucket=? AND node=?",
                        (bucket, node)).fetchone()
        value = (row[0] if row else 0) ^ delta
        if value:
            c.execute("INSERT OR REPLACE INTO merkle_nodes VALUES (?, ?, ?)",
                      (bucket, node, value))
        else:
            c.execute("DELETE FROM merkle_nodes WHERE bucket=? AND node=?", (bucket, node))


def drop_bucket(c, bucket):
    c.execute("DELETE FROM merkle_nodes WHERE bucket=?", (bucket,))
    c.execute("DELETE FROM merkle_leaves WHERE bucket=?", (bucket,))


def build(c):
    """Build every tree from the versions and tombstones stored."""
    c.execute("DELETE FROM merkle_nodes")
    c.execute("DELETE FROM merkle_leaves")
    for bucket, key, version_id, hlc, stamp in c.execute(
            "SELECT bucket, key, version_id, hlc, stamp FROM versions").fetchall():
        change(c, bucket, key, version_id, None, (False, hlc if stamp is None else stamp))
    for bucket, key, version_id, stamp in c.execute(
            "SELECT bucket, key, version_id, stamp FROM version_tombstones").fetchall():
        change(c, bucket, key, version_id, None, (True, stamp))
    c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, '1')", (BUILT_SETTING,))


def node_hashes(c, bucket, nodes):
    """``{node: hash}`` for each of ``nodes`` (0 for an empty one)."""
    found = {}
    for node in nodes:
        row = c.execute("SELECT hash FROM merkle_nodes WHERE bucket=? AND node=?",
                        (bucket, node)).fetchone()
        found[node] = row[0] if row else 0
    return found


def leaves(c, bucket, prefixes):
    """Every leaf in the leaf buckets ``prefixes``: ``[(key, version_id,
    tombstone, stamp), ...]`` (key as bytes)."""
    out = []
    for prefix in prefixes:
        out.extend((key, version_id, bool(tombstone), stamp)
                   for key, version_id, tombstone, stamp in c.execute(
                       "SELECT key, version_id, tombstone, stamp FROM merkle_leaves"
                       " WHERE bucket=? AND prefix=?", (bucket, prefix)))
    return out


def children(node):
    """The 16 children of a tree node."""
    return [node + digit for digit in "0123456789abcdef"]
