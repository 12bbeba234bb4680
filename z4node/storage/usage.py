"""How many objects and bytes each bucket holds on this node, kept by
SQLite triggers in every transaction that changes the ``versions`` or
``heads`` table, so that the metrics read a row per bucket and never count
by a scan (issue 15).

Table ``bucket_usage`` (in the metadata database), a row per bucket this
node holds records of:

- ``objects`` and ``bytes``: the keys whose newest version is an object
  (not a delete marker), and the sum of those versions' sizes; what a
  listing shows;
- ``versions`` and ``version_bytes``: every version stored, noncurrent
  ones and delete markers included, and their sizes; what the bucket takes
  before replication.

The triggers follow each row of ``heads`` and ``versions`` as it is
inserted, updated or deleted, so every path that writes them (a PUT, a
replica's late write, a delete by version id, an expired marker collected,
a bucket dropped) keeps the counts. A head replaced by ``INSERT OR
REPLACE`` would bypass the delete trigger (SQLite fires it on a REPLACE
only with recursive triggers), so heads are replaced by upserts. A data
dir from before the table gets it computed once, at start.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS bucket_usage (
    bucket TEXT PRIMARY KEY, objects INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, versions INTEGER NOT NULL DEFAULT 0,
    version_bytes INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS usage_head_added AFTER INSERT ON heads
WHEN NEW.deleted = 0 BEGIN
    INSERT INTO bucket_usage (bucket, objects, bytes) VALUES (NEW.bucket, 1, NEW.size)
    ON CONFLICT (bucket) DO UPDATE SET objects = objects + 1,
        bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS usage_head_removed AFTER DELETE ON heads
WHEN OLD.deleted = 0 BEGIN
    UPDATE bucket_usage SET objects = objects - 1, bytes = bytes - OLD.size
    WHERE bucket = OLD.bucket;
END;
CREATE TRIGGER IF NOT EXISTS usage_head_changed AFTER UPDATE OF deleted, size ON heads
BEGIN
    INSERT INTO bucket_usage (bucket, objects, bytes) VALUES (
        NEW.bucket, (NEW.deleted = 0) - (OLD.deleted = 0),
        (CASE WHEN NEW.deleted = 0 THEN NEW.size ELSE 0 END)
        - (CASE WHEN OLD.deleted = 0 THEN OLD.size ELSE 0 END))
    ON CONFLICT (bucket) DO UPDATE SET objects = objects + excluded.objects,
        bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS usage_version_added AFTER INSERT ON versions BEGIN
    INSERT INTO bucket_usage (bucket, versions, version_bytes) VALUES (NEW.bucket, 1, NEW.size)
    ON CONFLICT (bucket) DO UPDATE SET versions = versions + 1,
        version_bytes = version_bytes + excluded.version_bytes;
END;
CREATE TRIGGER IF NOT EXISTS usage_version_removed AFTER DELETE ON versions BEGIN
    UPDATE bucket_usage SET versions = versions - 1, version_bytes = version_bytes - OLD.size
    WHERE bucket = OLD.bucket;
END;
"""

# node_settings row saying the counts were computed from the tables (a
# data dir from before them gets them computed once, at start).
BUILT_SETTING = "bucket_usage_built"


def build(c):
    """Compute every bucket's counts from the rows stored."""
    c.execute("DELETE FROM bucket_usage")
    c.execute("INSERT INTO bucket_usage (bucket, versions, version_bytes)"
              " SELECT bucket, count(*), sum(size) FROM versions GROUP BY bucket")
    c.execute("INSERT INTO bucket_usage (bucket, objects, bytes)"
              " SELECT bucket, count(*), sum(size) FROM heads WHERE deleted = 0"
              " GROUP BY bucket"
              " ON CONFLICT (bucket) DO UPDATE SET objects = excluded.objects,"
              " bytes = excluded.bytes")
    c.execute("INSERT OR REPLACE INTO node_settings VALUES (?, '1')", (BUILT_SETTING,))


def read(c):
    """``{bucket: {"objects", "bytes", "versions", "version_bytes"}}``."""
    return {bucket: {"objects": objects, "bytes": size, "versions": versions,
                     "version_bytes": version_bytes}
            for bucket, objects, size, versions, version_bytes in c.execute(
                "SELECT bucket, objects, bytes, versions, version_bytes FROM bucket_usage"
                " ORDER BY bucket")}
