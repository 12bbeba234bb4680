"""The Merkle trees over this node's object records, kept up to date inside
every write transaction that changes a record, so that anti-entropy
compares replicas without scanning them
(:mod:`z4node.replication.antientropy`; DESIGN.md, "Anti-entropy").

Each bucket has three trees, named by :func:`tree`: its versions (the
bucket's name), its multipart uploads (``BUCKET/uploads``) and their parts
(``BUCKET/parts``); ``/`` is not allowed in a bucket name, so the names
never collide. A *leaf* is one slot, (key, version id), and says what the
slot holds: a record or a tombstone, and its edit stamp. In a versions
tree the slot is (object key, version id) and a tombstone a version
deleted by its id; in an uploads tree, (upload id, "") and a tombstone an
upload that ended (completed or aborted); in a parts tree, (upload id,
part number). An edit stamp is an HLC, unique per edit, so two replicas
with equal leaves hold the same record. Leaves sit in *leaf buckets* named
by the first ``DEPTH`` hex digits of a hash of the slot; a tree node (a prefix of
those digits, the root being ``""``) hashes to the XOR of the hashes of the
leaves below it, as Cassandra's trees combine rows. Only the leaf buckets'
hashes are stored: a write updates one leaf row and one bucket row, and a
node above them is XORed from its buckets when anti-entropy asks (at most
4,096 small rows, for the root). With 16 children a node and ``DEPTH`` 3
there are 4,096 leaf buckets: about 25 leaves each for 100,000 versions in
a bucket.

Tables (in the metadata database): ``merkle_buckets`` (tree, prefix, hash)
and ``merkle_leaves`` (tree, prefix, key, version id, tombstone, stamp),
their ``bucket`` column naming the tree. The functions that change a tree
run inside the caller's write transaction.
"""

import hashlib

DEPTH = 3
ROOT = ""
TABLES = ("versions", "uploads", "parts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS merkle_buckets (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, hash INTEGER NOT NULL,
    PRIMARY KEY (bucket, prefix)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merkle_leaves (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, key BLOB NOT NULL,
    version_id TEXT NOT NULL, tombstone INTEGER NOT NULL, stamp INTEGER NOT NULL,
    PRIMARY KEY (bucket, prefix, key, version_id)) WITHOUT ROWID;
"""

# node_settings row saying the trees were built from the tables (a data dir
# from before the trees existed gets them built once, at start; from
# before the uploads' and parts' trees, too).
BUILT_SETTING = "merkle_trees_built"


def tree(bucket, table):
    """The name of the bucket's tree of ``table`` (versions, uploads or parts)."""
    if table not in TABLES:
        raise ValueError(f"no Merkle tree for {table!r}")
    return bucket if table == "versions" else f"{bucket}/{table}"


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
    if new is not None:
        delta ^= leaf_hash(key, version_id, *new)
        c.execute("INSERT OR REPLACE INTO merkle_leaves VALUES (?, ?, ?, ?, ?, ?)",
                  (bucket, prefix, key, version_id, int(new[0]), new[1]))
    else:
        c.execute("DELETE FROM merkle_leaves WHERE bucket=? AND prefix=? AND key=?"
                  " AND version_id=?", (bucket, prefix, key, version_id))
    # XOR in SQL, (a | b) - (a & b): one statement. A leaf bucket whose
    # leaves cancel out stays as a 0, which reads the same as none.
    c.execute("INSERT INTO merkle_buckets VALUES (?, ?, ?) ON CONFLICT (bucket, prefix)"
              " DO UPDATE SET hash = (hash | excluded.hash) - (hash & excluded.hash)",
              (bucket, prefix, delta))


def drop_bucket(c, bucket):
    """Drop the bucket's three trees."""
    for table in TABLES:
        c.execute("DELETE FROM merkle_buckets WHERE bucket=?", (tree(bucket, table),))
        c.execute("DELETE FROM merkle_leaves WHERE bucket=?", (tree(bucket, table),))


def upload_changed(c, bucket, upload_id, old, new):
    """:func:`change` for the leaf of an upload."""
    change(c, tree(bucket, "uploads"), upload_id.encode("utf-8"), "", old, new)


def part_changed(c, bucket, upload_id, number, old, new):
    """:func:`change` for the leaf of a part."""
    change(c, tree(bucket, "parts"), upload_id.encode("utf-8"), str(number), old, new)


def build(c):
    """Build every tree from the records stored."""
    c.execute("DELETE FROM merkle_buckets")
    c.execute("DELETE FROM merkle_leaves")
    for bucket, key, version_id, hlc, stamp in c.execute(
            "SELECT bucket, key, version_id, hlc, stamp FROM versions").fetchall():
        change(c, bucket, key, version_id, None, (False, hlc if stamp is None else stamp))
    for bucket, key, version_id, stamp in c.execute(
            "SELECT bucket, key, version_id, stamp FROM version_tombstones").fetchall():
        change(c, bucket, key, version_id, None, (True, stamp))
    for bucket, upload_id, hlc in c.execute(
            "SELECT bucket, upload_id, hlc FROM uploads").fetchall():
        upload_changed(c, bucket, upload_id, None, (False, hlc))
    for bucket, upload_id, hlc in c.execute(
            "SELECT bucket, upload_id, hlc FROM completed_uploads").fetchall():
        upload_changed(c, bucket, upload_id, None, (True, hlc))
    for bucket, upload_id, number, hlc in c.execute(
            "SELECT u.bucket, p.upload_id, p.part_number, p.hlc FROM parts p"
            " JOIN uploads u ON u.upload_id = p.upload_id").fetchall():
        part_changed(c, bucket, upload_id, number, None, (False, hlc))
    c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, '1')", (BUILT_SETTING,))


def node_hashes(c, bucket, nodes):
    """``{node: hash}`` for each of ``nodes`` (0 for an empty one): the
    XOR of the leaf buckets under it, computed here (one range read a node;
    4,096 rows for the root), so that a write updates one row, not one per
    level."""
    found = {}
    for node in nodes:
        value = 0
        for (hash_,) in c.execute(
                "SELECT hash FROM merkle_buckets WHERE bucket=? AND prefix>=? AND prefix<?",
                (bucket, node, node + "g")):
            value ^= hash_
        found[node] = value
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
