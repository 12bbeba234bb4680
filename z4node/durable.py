"""Files and directories that survive a crash or a power cut once written.

Owns the one way the node makes a file or a directory durable: data
fsynced before the rename that puts it in place, and the directory that
holds the new name fsynced after it (a rename or a new entry lives in its
directory, which is not fsynced by fsyncing the file). Everything here
blocks: call it at start-up or on a thread, never on the reactor thread
while serving.
"""

import os


def fsync_directory(directory):
    """Make the entries of ``directory`` (new names, renames) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(path, mode=0o777):
    """``os.makedirs(path, exist_ok=True)``, with every directory it
    creates fsynced into its parent: a file fsynced into a directory that a
    crash then loses is lost with it."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    make_directories(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    fsync_directory(parent)


def write_synced(path, data, mode=0o600):
    """Create (or truncate) ``path`` with ``data`` and fsync it: the first
    half of a durable write, before the rename that puts it in place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data, mode=0o600, replace=True):
    """Write ``data`` (bytes) to ``path`` whole or not at all: a temp file
    is written and fsynced, then renamed into place and its directory
    fsynced. With ``replace=False`` an existing file is kept and
    FileExistsError raised (two writers: the first one wins)."""
    directory = os.path.dirname(path) or "."
    make_directories(directory)
    temp = f"{path}.{os.getpid()}.tmp"
    write_synced(temp, data, mode)
    try:
        if replace:
            os.replace(temp, path)
        else:
            # link() fails if the name exists, where rename() would not.
            os.link(temp, path)
    finally:
        if not replace:
            os.unlink(temp)
    fsync_directory(directory)
