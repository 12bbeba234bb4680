"""How much reactor time the aws-chunked decoder takes: a 256 MiB body
(64 KiB chunks, as the AWS SDKs for Java and Go send) fed in 64 KiB reads,
as the socket delivers it. Reports the total and the longest single
``feed`` (how long one upload can hold the reactor at once), for the signed
flavour and for the unsigned one with a CRC32 trailer.

    python -m benchmarks.chunked_decode [--mib 256]
"""

import argparse
import base64
import hashlib
import time
import zlib

from z4node.s3.auth import Credentials
from z4node.s3.chunked import AwsChunkedDecoder
from z4node.s3.sigv4 import (STREAMING_PAYLOAD, STREAMING_UNSIGNED_TRAILER, ChunkSigner,
                             derive_signing_key)

CHUNK = 64 * 1024
READ = 64 * 1024


def signed_body(payload):
    signer = ChunkSigner(derive_signing_key("secret", "20240301", "us-east-1", "s3"),
                         "20240301T000000Z", "20240301/us-east-1/s3/aws4_request", "0" * 64)
    out, previous = [], signer.seed_signature
    for start in range(0, len(payload) + 1, CHUNK):
        data = payload[start:start + CHUNK]
        previous = signer.chunk_signature(previous, hashlib.sha256(data).hexdigest())
        out.append(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), previous.encode(), data))
        if not data:
            # "0;chunk-signature=...\r\n\r\n": the blank line ends the body.
            break
    credentials = Credentials("AKID", 4, STREAMING_PAYLOAD, False, signer)
    headers = {"x-amz-content-sha256": STREAMING_PAYLOAD,
               "x-amz-decoded-content-length": str(len(payload))}
    return b"".join(out), credentials, headers


def unsigned_body(payload):
    out = [b"%x\r\n%s\r\n" % (len(payload[s:s + CHUNK]), payload[s:s + CHUNK])
           for s in range(0, len(payload), CHUNK)]
    crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big"))
    out.append(b"0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % crc)
    headers = {"x-amz-content-sha256": STREAMING_UNSIGNED_TRAILER,
               "x-amz-trailer": "x-amz-checksum-crc32",
               "x-amz-decoded-content-length": str(len(payload))}
    return b"".join(out), None, headers


def run(body, credentials, headers):
    decoder = AwsChunkedDecoder(credentials, headers)
    longest = total = 0.0
    size = 0
    for start in range(0, len(body), READ):
        piece = body[start:start + READ]
        began = time.perf_counter()
        size += sum(len(p) for p in decoder.feed(piece))
        took = time.perf_counter() - began
        total += took
        longest = max(longest, took)
    decoder.finish()
    return size, total, longest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    payload = bytes(range(256)) * (args.mib * 4096)
    for name, build in (("signed", signed_body), ("unsigned+crc32", unsigned_body)):
        size, total, longest = run(*build(payload))
        assert size == len(payload)
        print(f"{name:15} {args.mib} MiB: {total:.3f} s of feed ({size / total / 1e6:,.0f} MB/s), "
              f"longest feed {longest * 1000:.2f} ms")


if __name__ == "__main__":
    main()
