"""Snapshots of a node's metadata, and their restore into a data dir.

A snapshot is one SQLite file: a copy of the node's ``meta.sqlite3`` made
with SQLite's online backup API while the node serves. The copy runs in
one step, inside one read transaction of a connection of its own, so it
holds exactly the writes committed before it began (every acknowledged
write is committed first: ``storage.db``) and nothing half-done; the
node's writer carries on meanwhile (WAL). It blocks, so the node runs it
on a thread (:func:`take_snapshot` from ``admin.commands``).

:func:`restore_snapshot` puts a snapshot in place as the metadata of a
data dir that no node serves and that has no metadata yet. It needs no
running node: ``z4 restore`` calls it directly.

This module owns the snapshot file only: chunk files, the node key and
the cluster secret are copied by the operator (docs/operations.md,
"Backup and restore"), and it never writes the live database.
"""

import json
import os
import sqlite3
from contextlib import closing
from urllib.parse import quote

from z4node import durable
from z4node.storage.atrest import ENCRYPTION_SETTING


# The metadata database's file name in a data dir.
META_FILE = "meta.sqlite3"


class SnapshotError(Exception):
    """A snapshot cannot be taken or restored; the message says why."""


def take_snapshot(database_path, target_path):
    """Copy the SQLite database at ``database_path`` to ``target_path`` (a
    new file, fsynced, never overwriting one) consistently while others
    write it; what the snapshot holds (:func:`describe`). Blocks."""
    if os.path.lexists(target_path):
        raise SnapshotError(f"{target_path} exists: a snapshot never overwrites a file")
    directory = os.path.dirname(target_path)
    if not os.path.isdir(directory):
        raise SnapshotError(f"no directory {directory} to write the snapshot in")
    source = _open_read_only(database_path)
    with closing(source):
        return _copy(source, target_path)


def restore_snapshot(snapshot_path, database_path):
    """Check the snapshot at ``snapshot_path`` and copy it to
    ``database_path``, which must not exist; what it holds. Blocks."""
    for path in (database_path, database_path + "-wal"):
        if os.path.lexists(path):
            raise SnapshotError(
                f"{path} exists: restore into a data dir without metadata (move "
                f"{os.path.basename(database_path)}* away first)")
    try:
        source = _open_read_only(snapshot_path)
    except sqlite3.Error as e:
        raise SnapshotError(f"cannot open snapshot {snapshot_path}: {e}") from None
    with closing(source):
        try:
            _check(source, snapshot_path)
        except sqlite3.DatabaseError as e:
            raise SnapshotError(f"{snapshot_path} is not a z4node snapshot: {e}") from None
        return _copy(source, database_path)


def describe(connection):
    """The node a database belongs to and its node key, if encrypted."""
    settings = dict(connection.execute(
        "SELECT name, value FROM node_settings WHERE name IN ('node_id', ?)",
        (ENCRYPTION_SETTING,)).fetchall())
    encryption = json.loads(settings.get(ENCRYPTION_SETTING) or "{}")
    return {"node_id": settings.get("node_id"),
            "encryption_key_id": encryption.get("key_id")}


def _open_read_only(path):
    if not os.path.isfile(path):
        raise SnapshotError(f"no database file at {path}")
    return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                           isolation_level=None)


def _check(connection, path):
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise SnapshotError(f"{path} is damaged: {'; '.join(problems[:5])}")
    if describe(connection)["node_id"] is None:
        raise SnapshotError(f"{path} holds no node id: not a z4node snapshot")


def _copy(source, target_path):
    """Back ``source`` up into ``target_path`` whole or not at all."""
    partial = f"{target_path}.{os.getpid()}.partial"
    try:
        with closing(sqlite3.connect(partial, isolation_level=None)) as target:
            # pages=-1: the whole database in one step, so one read
            # transaction of the source: a consistent copy.
            source.backup(target, pages=-1)
            # A file that stands alone, with no -wal beside it to lose.
            target.execute("PRAGMA journal_mode=DELETE")
            _check(target, target_path)
            described = describe(target)
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # link(): fails if the name appeared meanwhile, where rename() would
        # replace it.
        os.link(partial, target_path)
        durable.fsync_directory(os.path.dirname(target_path))
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)
    return dict(described, path=target_path, bytes=os.path.getsize(target_path))
