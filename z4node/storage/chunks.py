"""Content-addressed chunk files.

A chunk is up to 4 MiB of object bytes named by the BLAKE3 hash of its
content, stored once per node as ``chunks/<h0h1>/<h2h3>/<hex>``: written to
a temp file, fsynced, renamed into place, and the directory fsynced, so a
crash leaves either no chunk or a whole one. Names come from hashes, never
from object keys, so no key can become a path.

Operations on the same hash run in the order they were asked for, so a
garbage-collector delete and a new write of the same content can never
interleave: the write that comes second finds the file gone and writes it
again. A chunk read back is verified against its name before a byte of it
is returned; a bad copy is renamed ``.corrupted`` (kept for inspection,
never deleted) and reported as :class:`ChunkCorrupted`.

In an encrypted data dir (:meth:`ChunkStore.encrypt_with`) a chunk file
holds the chunk sealed with AES-256-GCM under a data key of its own, and
that data key, wrapped by the node key, is a row of the metadata store's
``chunk_keys`` table, where a key rotation rewraps it in a transaction
without touching the file. The name stays the hash of the plaintext, so
identical content is still stored (and encrypted) once. Ordering keeps a
file from ever existing without its key: a new file's key row is committed
before the file is renamed into place, and a deleted file is unlinked
before its key row goes. A file is sealed and opened on the chunk I/O
pool, never on the reactor thread.
"""

import os

import blake3
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from z4node import durable
from z4node.storage.crypto import KeyUnavailable, Tampered

CHUNK_SIZE = 4 * 1024 * 1024
HASH_SIZE = 32

log = Logger()


class ChunkMissing(Exception):
    """The chunk is not stored on this node."""


class ChunkCorrupted(Exception):
    """The stored chunk does not hash to its name; it was set aside."""


def chunk_hash(data):
    return blake3.blake3(data).digest()


class ChunkStore:
    """The chunk files of one data directory."""

    # Disk threads: chunk writes are fsync-bound, so a few in parallel keep
    # the disk busy without letting one PUT's chunks starve other requests.
    io_threads = 4

    def __init__(self, reactor, root):
        self._reactor = reactor
        self.root = root
        durable.make_directories(root)
        self._pool = ThreadPool(1, self.io_threads, name="z4-chunk-io")
        self._tails = {}
        self._pins = {}
        self._at_rest = None
        self._keys = None
        # Called on the reactor thread with a chunk's hash after its file
        # appeared or went away (written where there was none, deleted, set
        # aside), and only then: the chunk-set trees of anti-entropy toggle
        # the chunk in or out (z4node.replication.chunk_tree).
        self.on_change = None

    def encrypt_with(self, at_rest, keys):
        """Seal every chunk written from now on with ``at_rest`` (an
        :class:`z4node.storage.crypto.AtRest`), keeping wrapped data keys in
        ``keys`` (a :class:`z4node.storage.meta.ChunkKeys`); and expect
        every stored chunk to be sealed."""
        self._at_rest = at_rest
        self._keys = keys

    def start(self):
        self._pool.start()

    def stop(self):
        self._pool.stop()

    def run(self, fn, *args):
        """Run blocking ``fn`` on the chunk I/O pool; a Deferred."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def path(self, digest):
        name = digest.hex()
        return os.path.join(self.root, name[0:2], name[2:4], name)

    def pin(self, digest):
        """Keep ``digest`` from garbage collection until :meth:`unpin`."""
        self._pins[digest] = self._pins.get(digest, 0) + 1

    def unpin(self, digest):
        count = self._pins[digest] - 1
        if count:
            self._pins[digest] = count
        else:
            del self._pins[digest]

    def is_pinned(self, digest):
        return digest in self._pins

    def _serialized(self, digest, fn, *args):
        """Run ``fn`` in the pool after every earlier operation on digest."""
        previous = self._tails.get(digest)
        tail = self._tails[digest] = Deferred()
        result = Deferred()

        def finished(outcome):
            if self._tails.get(digest) is tail:
                del self._tails[digest]
            tail.callback(None)
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        def start(_):
            self.run(fn, *args).addBoth(finished)

        if previous is None:
            start(None)
        else:
            previous.addCallback(start)
        return result

    def put_chunk(self, digest, data):
        """Store ``data`` under ``digest`` unless an intact copy is stored;
        durable when it fires."""
        return self._serialized(digest, self._write, digest, data)

    def _write(self, digest, data):
        path = self.path(digest)
        if self._intact(digest):
            # Touching the copy tells the garbage collector the content is
            # in use again (see delete_chunk).
            os.utime(path)
            return False
        key_saved = None
        if self._at_rest is not None:
            data, data_key = self._at_rest.seal_chunk(digest, data)
            # The key's commit (one WAL fsync) overlaps the file's write
            # and fsync; it is waited for before the rename below.
            key_saved = self._keys.save(digest, data_key)
        directory = os.path.dirname(path)
        durable.make_directories(directory)
        temp = f"{path}.{os.getpid()}.{id(data):x}.tmp"
        durable.write_synced(temp, data)
        if key_saved is not None:
            # Durable before the file is in place: a crash in between
            # leaves a key without a file (harmless, replaced by the next
            # write of this content), never a file without its key.
            key_saved.result()
        # A copy whose key is unavailable was neither intact nor set aside:
        # it is replaced in place, which changes no set of files.
        existed = os.path.exists(path)
        os.replace(temp, path)
        durable.fsync_directory(directory)
        if not existed:
            self._changed(digest)
        return True

    def _changed(self, digest):
        """Tell :attr:`on_change` that ``digest``'s file appeared or went
        away (called on the chunk I/O pool, after the change)."""
        if self.on_change is not None:
            self._reactor.callFromThread(self.on_change, digest)

    def _set_aside(self, digest, path):
        os.replace(path, path + ".corrupted")
        self._changed(digest)

    def _intact(self, digest):
        """Whether a stored copy of ``digest`` exists and reads back as
        ``digest`` (blocking). A write of the same content trusts only such
        a copy: a rotted one, or an encrypted one without its key row (the
        metadata was restored from an older backup), is replaced by the
        bytes in hand. Reading and hashing 4 MiB costs less than writing
        and fsyncing it again."""
        try:
            self._read(digest)
        except ChunkMissing:
            return False
        except ChunkCorrupted as e:
            # _read set a damaged file aside as .corrupted already.
            log.warn("chunk {hash} on disk is unusable ({why}); a new write of "
                     "its content replaces it", hash=digest.hex(), why=str(e))
            return False
        return True

    def has_chunk(self, digest):
        """Whether an intact copy of ``digest`` is stored (read and hashed:
        cheaper than sending the chunk to a node that has it)."""
        return self._serialized(digest, self._intact, digest)

    def get_chunk(self, digest, then=None):
        """The verified bytes of a chunk (ChunkMissing, ChunkCorrupted), or
        ``then(bytes)`` computed on the chunk I/O pool (to decrypt them)."""
        return self._serialized(digest, self._read, digest, then)

    def _read(self, digest, then=None):
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ChunkMissing(digest.hex()) from None
        if self._at_rest is not None:
            data = self._open(digest, path, data)
        if chunk_hash(data) != digest:
            self._set_aside(digest, path)
            raise ChunkCorrupted(digest.hex())
        return data if then is None else then(data)

    def _open(self, digest, path, stored):
        wrapped = self._keys.load(digest)
        if wrapped is None:
            self._set_aside(digest, path)
            raise ChunkCorrupted(f"{digest.hex()}: no data key is stored for it")
        try:
            return self._at_rest.open_chunk(digest, stored, wrapped)
        except KeyUnavailable as e:
            # Not the file's fault: keep it where it is.
            raise ChunkCorrupted(f"{digest.hex()}: {e}") from None
        except Tampered as e:
            self._set_aside(digest, path)
            raise ChunkCorrupted(f"{digest.hex()}: {e}") from None

    def delete_chunk(self, digest, untouched_since):
        """Delete a chunk file unless it was written or touched after
        ``untouched_since`` (unix seconds); fires with the bytes it freed,
        or None if it deleted nothing."""
        return self._serialized(digest, self._delete, digest, untouched_since)

    def _delete(self, digest, untouched_since):
        path = self.path(digest)
        try:
            stat = os.stat(path)
            if stat.st_mtime >= untouched_since:
                return None
            os.unlink(path)
        except FileNotFoundError:
            return None
        self._changed(digest)
        if self._keys is not None:
            # After the unlink: a crash in between leaves a key without a
            # file, never a file without its key.
            self._keys.drop(digest)
        return stat.st_size

    @property
    def encrypted(self):
        return self._keys is not None

    def drop_key_without_file(self, digest):
        """Drop the key row of a chunk that has no file (left by a crash
        between the key's commit and the file's rename); fires with
        whether it did. Ordered after any write of the same chunk."""
        return self._serialized(digest, self._drop_key_without_file, digest)

    def _drop_key_without_file(self, digest):
        if os.path.exists(self.path(digest)):
            return False
        self._keys.drop(digest)
        return True

    def leaf_directories(self, after=""):
        """The directories chunk files live in (``"ab/cd"``), in order,
        those after ``after`` only (blocking)."""
        for top in _listdir(self.root):
            if top < after[:2]:
                continue
            for mid in _listdir(os.path.join(self.root, top)):
                name = f"{top}/{mid}"
                if name > after:
                    yield name

    def hashes_named(self, prefix):
        """The hashes of the chunk files whose hex names start with
        ``prefix`` (2 or 3 hex digits; blocking): names only, no file is
        opened."""
        top = os.path.join(self.root, prefix[:2])
        for mid in _listdir(top):
            if not mid.startswith(prefix[2:]):
                continue
            for entry in _listdir(os.path.join(top, mid)):
                if len(entry) == 2 * HASH_SIZE:
                    try:
                        yield bytes.fromhex(entry)
                    except ValueError:
                        continue

    def stored_hashes(self, directory=None):
        """Chunk files on disk, in one leaf ``directory`` or in all, each as
        ``(digest, path, mtime)`` with a None digest for a temp file
        (blocking; for GC sweeps and checks)."""
        directories = self.leaf_directories() if directory is None else [directory]
        for name in directories:
            directory_path = os.path.join(self.root, name)
            for entry in _listdir(directory_path):
                path = os.path.join(directory_path, entry)
                if entry.endswith(".tmp"):
                    yield None, path, _mtime(path)
                elif len(entry) == 2 * HASH_SIZE:
                    try:
                        digest = bytes.fromhex(entry)
                    except ValueError:
                        continue
                    yield digest, path, _mtime(path)


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path):
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
