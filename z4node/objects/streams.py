"""Object bytes in and out: cutting a body stream into chunks, and streaming
a byte range of a stored version back out.

Incoming bytes are cut into chunks of 4 MiB. Each chunk is hashed (BLAKE3
for its name, MD5 for the ETag, and whatever checksums the S3 layer asked
for) on the chunk I/O pool, never on the reactor thread, in order. Its
write (file, fsync, rename) then runs while the network fills and the pool
hashes the chunks after it, with at most ``WRITES_IN_FLIGHT`` writes
outstanding: receiving, hashing and the disk overlap, which a write-then-
receive pipeline left each waiting for the others (a 256 MiB PUT ran at
under half the disk's fsynced rate). At most five chunks (20 MiB) are in
memory per upload whatever its size: three being written, one being
hashed, one filling (six for a moment while an SSE-C chunk is sealed:
plaintext and ciphertext).

An SSE-C object (``sealing``, see ``objects.encryption``) is sealed chunk
by chunk on the chunk I/O pool before the chunk store sees it, and opened
there again on the way out; at-rest encryption under the node key happens
below, inside the chunk store and the metadata store.
"""

import hashlib
from dataclasses import dataclass

from twisted.logger import Logger

from z4node.objects.errors import ObjectError
from z4node.storage.chunks import CHUNK_SIZE, ChunkCorrupted, ChunkMissing, chunk_hash

log = Logger()

# Objects up to this size are kept inside their metadata row (DESIGN.md):
# one SQLite write instead of a file, a rename and two fsyncs.
INLINE_LIMIT = 4096
# Chunk writes of one upload that may be outstanding at once.
WRITES_IN_FLIGHT = 3


@dataclass
class StoredBody:
    """What storing a body produced; chunks stay pinned until released."""

    chunks: list
    inline: bytes | None
    size: int
    md5: bytes


def _digest(data, md5, hashers):
    md5.update(data)
    for hasher in hashers:
        hasher.update(data)


def _digest_chunk(data, md5, hashers, sealing):
    """(name, bytes to store) of a chunk; an SSE-C chunk is named by the
    hash of its ciphertext, so that its name says nothing of its content."""
    _digest(data, md5, hashers)
    if sealing is not None:
        data = sealing.seal(data)
    return chunk_hash(data), data


def _digest_inline(data, md5, hashers, sealing):
    _digest(data, md5, hashers)
    return sealing.seal(data)


async def store_body(chunks, body, hashers=(), inline_limit=INLINE_LIMIT, sealing=None):
    """Consume ``body`` (an async iterable of bytes) into chunks, sealed
    with ``sealing`` (a CustomerSealing) if given.

    Returns a StoredBody whose chunk hashes are pinned in ``chunks`` so
    garbage collection leaves them alone until :func:`release` is called,
    after the version that uses them is committed (or abandoned). Sizes
    and digests are those of the plaintext.
    """
    md5 = hashlib.md5()
    stored = []
    writes = []
    pending = []
    pending_size = 0
    size = 0

    async def store(data):
        size = len(data)
        digest, data = await chunks.run(_digest_chunk, data, md5, hashers, sealing)
        chunks.pin(digest)
        stored.append((digest, size))
        writes.append(chunks.put_chunk(digest, data))
        if len(writes) > WRITES_IN_FLIGHT:
            await writes.pop(0)

    try:
        async for piece in body:
            size += len(piece)
            view = memoryview(piece)
            # Gather views of the pieces and join them once per chunk: each
            # byte is copied once, and at most one chunk plus one piece is
            # held at a time.
            while len(view) >= CHUNK_SIZE - pending_size:
                take = CHUNK_SIZE - pending_size
                pending.append(view[:take])
                view = view[take:]
                data = b"".join(pending)
                pending, pending_size = [], 0
                await store(data)
                del data
            if view:
                pending.append(view)
                pending_size += len(view)
        tail = b"".join(pending)
        del pending
        if not stored and len(tail) <= inline_limit:
            # Inline bytes live in the record: no chunk, so no chunk name.
            if sealing is None:
                _digest(tail, md5, hashers)
            else:
                tail = await chunks.run(_digest_inline, tail, md5, hashers, sealing)
            return StoredBody([], tail, size, md5.digest())
        if tail:
            await store(tail)
        while writes:
            await writes.pop(0)
    except BaseException:
        # No write outlives the request: the pins come off only once each
        # has landed or failed.
        for write in writes:
            try:
                await write
            except Exception:
                pass
        release(chunks, stored)
        raise
    return StoredBody(stored, None, size, md5.digest())


def release(chunks, stored_chunks):
    """Unpin chunks pinned by :func:`store_body` or :func:`pin_version`."""
    for digest, _ in stored_chunks:
        chunks.unpin(digest)


def pin_version(chunks, version):
    for digest, _ in version.chunks:
        chunks.pin(digest)


async def open_range(chunks, version, start, end, sealing=None):
    """:func:`read_range`, with its first chunk already read and verified:
    a chunk missing or damaged at the start fails here, as
    ObjectError("InternalError"), before the caller has promised anything
    (a GET's status line and length). A chunk that fails later can only
    end the stream early."""
    reader = read_range(chunks, version, start, end, sealing)
    try:
        first = await reader.__anext__()
    except StopAsyncIteration:
        return reader
    except (ChunkMissing, ChunkCorrupted):
        raise ObjectError("InternalError", "The object's data could not be read; "
                          "the node logged which chunk failed.") from None
    return _after(first, reader)


async def _after(first, rest):
    try:
        yield first
        async for piece in rest:
            yield piece
    finally:
        await rest.aclose()


async def read_range(chunks, version, start, end, sealing=None):
    """Yield the bytes ``start..end`` (inclusive) of a version, chunk by
    chunk, each chunk verified against its hash (and opened with
    ``sealing`` for SSE-C) before any of it is yielded. The next chunk is
    fetched while the current one is being sent. A chunk that cannot be
    read (ChunkMissing, ChunkCorrupted) is logged with the object, the
    version and the chunk it hit, then raised."""
    if version.inline is not None:
        if end >= start:
            inline = version.inline
            if sealing is not None:
                inline = await chunks.run(sealing.open, inline)
            yield inline[start:end + 1]
        return
    then = sealing.open if sealing is not None else None
    wanted = []
    offset = 0
    for digest, size in version.chunks:
        if offset + size > start and offset <= end:
            wanted.append((digest, max(start - offset, 0), min(end - offset, size - 1)))
        offset += size
    pending = chunks.get_chunk(wanted[0][0], then) if wanted else None
    try:
        for index, (digest, first, last) in enumerate(wanted):
            try:
                data, pending = await pending, None
            except (ChunkMissing, ChunkCorrupted) as e:
                pending = None
                log.error("unreadable chunk {hash} of {bucket}/{key} version {version}: "
                          "{kind}: {why}", hash=digest.hex(), bucket=version.bucket,
                          key=version.key, version=version.version_id,
                          kind=type(e).__name__, why=str(e))
                raise
            if index + 1 < len(wanted):
                pending = chunks.get_chunk(wanted[index + 1][0], then)
            yield data if (first, last) == (0, len(data) - 1) else data[first:last + 1]
    finally:
        if pending is not None:
            # The reader stopped early (client gone): the prefetch's outcome
            # no longer matters, and must not be reported as unhandled.
            pending.addErrback(lambda _: None)
