"""The aws-chunked request body: its framing, its chunk signatures and its
trailing checksum, undone as the bytes arrive.

Three flavours, named by x-amz-content-sha256:

- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: every chunk signed, each
  signature chained to the one before, starting from the Authorization
  header's;
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the same, then a trailer
  (an ``x-amz-checksum-*`` header) with its own signature;
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER``: chunks without signatures and a
  checksum trailer (what botocore sends over HTTPS). A body sent with
  ``Content-Encoding: aws-chunked`` under any other payload hash is read
  the same way, without signatures.

On the wire (AWS's "Transferring Payload in Multiple Chunks" and "Including
Trailing Headers")::

    hex-size[;chunk-signature=sig] CRLF  data CRLF   ...one per chunk
    0[;chunk-signature=sig] CRLF
    [name:value CRLF ... [x-amz-trailer-signature:sig CRLF]]
    CRLF

This module owns that format and nothing else: it neither reads sockets
nor stores bytes, and the payload it returns never contains framing.
"""

import hashlib
import re

from z4node.objects.checksums import algorithm_from_header, new_checksum
from z4node.objects.errors import ObjectError
from z4node.s3 import integers
from z4node.s3.errors import S3Error
from z4node.s3.sigv4 import (EMPTY_SHA256, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER,
                             STREAMING_UNSIGNED_TRAILER, same_signature)

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_KNOWN = (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)

# Parser states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


def is_aws_chunked(headers):
    """Whether a request's body is aws-chunked: a STREAMING-* payload hash,
    or ``aws-chunked`` among its content codings."""
    if headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
        return True
    codings = headers.get("content-encoding", "")
    return "aws-chunked" in [coding.strip().lower() for coding in codings.split(",")]


def _malformed(reason):
    return S3Error("InvalidRequest", f"Malformed aws-chunked body: {reason}.")


class AwsChunkedDecoder:
    """Decodes one aws-chunked body fed in pieces of any size.

    ``feed()`` returns the payload pieces ready so far. In the signed
    flavours a chunk is released only once its signature has checked, so
    every byte returned is authenticated; the trailer's checksum and
    signature and the decoded length can only be checked by ``finish()``,
    so nothing is complete until it returns.
    """

    # A chunk header is about 90 bytes with its signature, a trailer line
    # under 100; longer means garbage, not a line still arriving.
    max_line_bytes = 4096
    # A signed chunk is held whole until its signature checks. Clients sign
    # chunks of 64 KiB (AWS's own example) to a few hundred KiB; 16 MiB
    # leaves room for any of them while bounding what one upload can pin.
    max_signed_chunk_bytes = 16 * 1024 * 1024
    # The trailer section: one checksum and one signature in practice.
    max_trailer_bytes = 16 * 1024

    def __init__(self, credentials, headers):
        content_sha256 = headers.get("x-amz-content-sha256", "")
        if content_sha256.startswith("STREAMING-") and content_sha256 not in _KNOWN:
            raise S3Error("InvalidArgument", f"Unsupported aws-chunked payload {content_sha256!r}.",
                          extra={"ArgumentName": "x-amz-content-sha256",
                                 "ArgumentValue": content_sha256})
        signer = credentials.chunk_signer if credentials is not None else None
        if content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER) and signer is None:
            raise S3Error("InvalidRequest", f"{content_sha256} needs a SigV4 Authorization header "
                                            "to check its chunk signatures against.")
        self._signer = signer
        self._previous = signer.seed_signature if signer is not None else None
        self._trailer_signed = content_sha256 == STREAMING_PAYLOAD_TRAILER

        trailer = headers.get("x-amz-trailer")
        if trailer is None:
            if content_sha256.endswith("-TRAILER"):
                raise S3Error("InvalidRequest", f"{content_sha256} requires an x-amz-trailer header.")
            self._expected_trailer = self._algorithm = self._checksum = None
        else:
            self._expected_trailer = trailer.strip().lower()
            try:
                self._algorithm = algorithm_from_header(self._expected_trailer)
            except ObjectError as e:
                raise S3Error(e.code, e.message) from None
            self._checksum = new_checksum(self._algorithm)

        declared = headers.get("x-amz-decoded-content-length")
        self._declared = None if declared is None else integers.parameter(
            declared, "x-amz-decoded-content-length", maximum=integers.INT64_MAX,
            message="x-amz-decoded-content-length must be a number of bytes.")

        # A line (chunk header, trailer) begun in one feed and ended in a
        # later one; payload bytes never pass through it.
        self._buf = bytearray()
        self._state = _SIZE
        self._remaining = 0        # data bytes of the current chunk still to come
        self._chunk_signature = None
        self._chunk_sha256 = None  # of the signed chunk arriving
        self._held = []            # its pieces, released once its signature checks
        self._announced = 0        # sum of chunk sizes so far
        self._decoded = 0          # payload bytes returned so far
        self._trailers = {}
        self._trailer_signature = None
        self._trailer_bytes = 0

    def feed(self, data):
        """Take the next raw bytes; return the payload pieces now ready
        (possibly none), as memoryviews of ``data``: the payload is never
        copied here. Raises S3Error on bad framing or a bad chunk signature.

        Hashing (a signed chunk's SHA-256, the trailer's checksum) is done
        piece by piece as the bytes arrive, so one call costs time in
        proportion to ``data``, never to a whole chunk."""
        if data and self._state == _DONE:
            raise _malformed("data after the end of the body")
        if not isinstance(data, bytes):
            data = bytes(data)
        view = memoryview(data)
        end = len(data)
        pos = 0
        out = []
        while True:
            state = self._state
            if state == _DATA:
                size = min(end - pos, self._remaining)
                if size == 0:
                    break
                piece = view[pos:pos + size]
                pos += size
                self._remaining -= size
                if self._signer is None:
                    self._release(piece, out)
                else:
                    self._chunk_sha256.update(piece)
                    self._held.append(piece)
                if self._remaining == 0:
                    if self._signer is not None:
                        self._check_chunk(self._chunk_sha256.hexdigest())
                        for held in self._held:
                            self._release(held, out)
                        self._held = []
                    self._state = _DATA_END
            elif state == _DATA_END:
                line, pos = self._line(data, pos, 0)
                if line is None:
                    break
                if line:
                    raise _malformed("chunk data not followed by CRLF")
                self._state = _SIZE
            elif state == _SIZE:
                line, pos = self._line(data, pos, self.max_line_bytes)
                if line is None:
                    break
                self._start_chunk(line)
            elif state == _TRAILER:
                line, pos = self._line(data, pos, self.max_line_bytes)
                if line is None:
                    break
                if line:
                    self._trailer_line(line)
                else:
                    self._state = _DONE
            else:
                if pos < end:
                    raise _malformed("data after the end of the body")
                break
        return out

    def _release(self, piece, out):
        self._decoded += len(piece)
        if self._checksum is not None:
            self._checksum.update(piece)
        out.append(piece)

    def finish(self):
        """The raw body has ended: check that it was whole, that the payload
        has the declared length, and the trailer's signature and checksum.
        Returns the trailing headers (lower-case names) but not the
        trailer signature."""
        if (self._state == _TRAILER and not self._buf
                and (self._trailers or self._expected_trailer is None)):
            # Only the blank line closing the trailer section is missing (some
            # clients leave it out); everything it would close has arrived.
            self._state = _DONE
        if self._state != _DONE:
            raise S3Error("IncompleteBody", "The aws-chunked body ended before its final chunk"
                          + (" and trailer." if self._expected_trailer else "."))
        if self._declared is not None and self._decoded != self._declared:
            raise S3Error("IncompleteBody", f"The decoded body has {self._decoded} bytes; "
                                            f"x-amz-decoded-content-length says {self._declared}.")
        self._check_trailers()
        return dict(self._trailers)

    def _line(self, data, pos, limit):
        """(the CRLF-terminated line at ``pos`` without its CRLF, the
        position after it), or (None, end of data) when it has not fully
        arrived: its start is kept for the next feed. A line longer than
        ``limit`` bytes is malformed."""
        if self._buf:
            # A line begun in an earlier feed: short (bounded), so join.
            begun = len(self._buf)
            window = self._buf + data[pos:pos + limit + 2]
            found = window.find(b"\r\n", 0, limit + 2)
            if found < 0:
                self._line_too_long(len(window), limit)
                self._buf = window
                return None, len(data)
            self._buf = bytearray()
            return bytes(window[:found]), pos + found + 2 - begun
        found = data.find(b"\r\n", pos, pos + limit + 2)
        if found < 0:
            self._line_too_long(len(data) - pos, limit)
            self._buf = bytearray(data[pos:])
            return None, len(data)
        return data[pos:found], found + 2

    @staticmethod
    def _line_too_long(size, limit):
        # Without its CRLF, a line of ``limit`` bytes may still end with a
        # CR whose LF is yet to come.
        if size > limit + 1:
            if limit == 0:
                raise _malformed("chunk data not followed by CRLF")
            raise _malformed(f"a line longer than {limit} bytes")

    def _start_chunk(self, line):
        size_field, _, extensions = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_field):
            raise _malformed(f"bad chunk size {size_field[:32]!r}")
        size = int(size_field, 16)
        if self._signer is not None:
            self._chunk_signature = self._signature_extension(extensions)
            if size > self.max_signed_chunk_bytes:
                raise S3Error("InvalidRequest", f"A signed aws-chunked chunk may hold at most "
                                                f"{self.max_signed_chunk_bytes} bytes.")
        self._announced += size
        if self._declared is not None and self._announced > self._declared:
            raise S3Error("IncompleteBody", "The aws-chunked body holds more than the "
                                            f"{self._declared} bytes x-amz-decoded-content-length says.")
        if size:
            self._remaining = size
            if self._signer is not None:
                self._chunk_sha256 = hashlib.sha256()
            self._state = _DATA
        else:
            if self._signer is not None:
                self._check_chunk(EMPTY_SHA256)
            self._state = _TRAILER

    @staticmethod
    def _signature_extension(extensions):
        for extension in extensions.split(b";"):
            name, _, value = extension.partition(b"=")
            if name.strip() == b"chunk-signature":
                return value.strip().decode("latin-1")
        raise S3Error("SignatureDoesNotMatch", "An aws-chunked chunk has no chunk-signature.")

    def _check_chunk(self, chunk_sha256):
        expected = self._signer.chunk_signature(self._previous, chunk_sha256)
        if not same_signature(expected, self._chunk_signature):
            raise S3Error("SignatureDoesNotMatch",
                          "The chunk signature we calculated does not match the one you provided.",
                          extra={"SignatureProvided": self._chunk_signature})
        self._previous = expected

    def _trailer_line(self, line):
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self.max_trailer_bytes:
            raise S3Error("MalformedTrailerError", "The trailer section is too long.")
        name, colon, value = line.partition(b":")
        name = name.strip().lower().decode("latin-1")
        if not colon or not name:
            raise S3Error("MalformedTrailerError", f"Cannot parse the trailer line {line[:64]!r}.")
        value = value.strip().decode("latin-1")
        if name == "x-amz-trailer-signature":
            if self._trailer_signature is not None:
                raise S3Error("MalformedTrailerError", "Two trailer signatures.")
            self._trailer_signature = value
        elif name in self._trailers:
            raise S3Error("MalformedTrailerError", f"The trailer {name} appears twice.")
        else:
            self._trailers[name] = value

    def _check_trailers(self):
        unexpected = self._trailers.keys() - {self._expected_trailer}
        if unexpected:
            raise S3Error("MalformedTrailerError", f"Trailing headers {', '.join(sorted(unexpected))} "
                                                   "were not announced in x-amz-trailer.")
        if self._expected_trailer is None:
            return
        if self._expected_trailer not in self._trailers:
            raise S3Error("MalformedTrailerError",
                          f"The trailer {self._expected_trailer} announced in x-amz-trailer is missing.")
        if self._trailer_signed:
            if self._trailer_signature is None:
                raise S3Error("SignatureDoesNotMatch", "The trailer has no x-amz-trailer-signature.")
            canonical = "".join([f"{name}:{value}\n" for name, value in sorted(self._trailers.items())])
            expected = self._signer.trailer_signature(self._previous, canonical.encode("latin-1"))
            if not same_signature(expected, self._trailer_signature):
                raise S3Error("SignatureDoesNotMatch",
                              "The trailer signature we calculated does not match the one you provided.",
                              extra={"SignatureProvided": self._trailer_signature})
        if self._trailers[self._expected_trailer] != self._checksum.b64():
            raise S3Error("BadDigest",
                          f"The {self._algorithm} you specified did not match the calculated checksum.")
