"""Tests for z4node.s3.chunked: AWS's chunked-upload and trailer examples
with their published signatures, botocore's unsigned-trailer uploads,
bodies built to the specification and split at every possible place, and
broken bodies that must fail with AWS's error code."""

import calendar

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from z4node.objects.checksums import ALGORITHMS, header_name, new_checksum
from z4node.s3.auth import Credentials, RequestView, authenticate
from z4node.s3.chunked import AwsChunkedDecoder, is_aws_chunked
from z4node.s3.errors import S3Error
from z4node.s3.sigv4 import ChunkSigner

from tests.signing import (ACCESS_KEY, AWS_SECRET_KEY, AWS_SECRETS, NOW, SECRET_KEY, SECRETS,
                           CapturingClient, aws_chunked, pin_clocks, signing_key)

AWS_NOW = float(calendar.timegm((2013, 5, 24, 0, 0, 0)))
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_PAYLOAD = b"a" * 66560

# "Transferring Payload in Multiple Chunks": the seed signature and the
# signatures of the 64 KiB, 1 KiB and final chunks.
CHUNKED_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNKED_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
# "Including Trailing Headers": the same payload with a CRC32C trailer.
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_SIGNATURES = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]
TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def aws_body(signatures, trailer_lines=b""):
    """AWS's example body, with the published signatures written in."""
    return (b"10000;chunk-signature=" + signatures[0].encode() + b"\r\n" + b"a" * 65536 + b"\r\n"
            + b"400;chunk-signature=" + signatures[1].encode() + b"\r\n" + b"a" * 1024 + b"\r\n"
            + b"0;chunk-signature=" + signatures[2].encode() + b"\r\n" + trailer_lines + b"\r\n")


def aws_view(content_sha256, seed, signed_headers, **extra):
    headers = {
        "host": "s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": content_sha256,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560",
        "authorization": ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                          f"aws4_request,SignedHeaders={signed_headers},Signature={seed}"),
    }
    headers.update(extra)
    return RequestView("PUT", b"/examplebucket/chunkObject.txt", b"", headers)


def decode(credentials, headers, body, pieces=(None,)):
    """Feed ``body`` cut at the offsets in ``pieces``; return (payload, trailers)."""
    decoder = AwsChunkedDecoder(credentials, headers)
    out, start = [], 0
    for end in pieces:
        out += decoder.feed(body[start:end])
        start = end if end is not None else len(body)
    out += decoder.feed(body[start:])
    return b"".join(out), decoder.finish()


def signed_credentials(seed="0" * 64, timestamp="20240301T123015Z", scope="20240301/us-east-1/s3/aws4_request"):
    signer = ChunkSigner(signing_key(SECRET_KEY, scope[:8]), timestamp, scope, seed)
    return Credentials(ACCESS_KEY, 4, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", False, signer)


def signed_body(payload, chunk_sizes, credentials, trailer=None, **options):
    signer = credentials.chunk_signer
    return aws_chunked(payload, chunk_sizes, seed=signer.seed_signature,
                       key=signing_key(SECRET_KEY, signer.scope[:8]),
                       timestamp=signer.timestamp, scope=signer.scope, trailer=trailer,
                       trailer_signed=trailer is not None, **options)[0]


def checksum_of(algorithm, payload):
    checksum = new_checksum(algorithm)
    checksum.update(payload)
    return checksum.b64()


class DecodeFailures:
    def assertDecodeFails(self, code, credentials, headers, body):
        decoder = AwsChunkedDecoder(credentials, headers)

        def run():
            decoder.feed(body)
            decoder.finish()

        error = self.assertRaises(S3Error, run)
        self.assertEqual(error.code, code, error.message)
        return error


class AwsChunkedExampleTests(DecodeFailures, SynchronousTestCase):
    """AWS S3 API reference, "Transferring Payload in Multiple Chunks"."""

    def setUp(self):
        self.view = aws_view(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", CHUNKED_SEED,
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class", **{"content-length": "66824"})
        self.credentials = authenticate(self.view, AWS_SECRETS.get, AWS_NOW)

    def test_seed_signature(self):
        self.assertEqual(self.credentials.payload_hash, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        self.assertEqual(self.credentials.chunk_signer.seed_signature, CHUNKED_SEED)
        self.assertEqual(self.credentials.chunk_signer.scope, AWS_SCOPE)

    def test_decodes(self):
        body = aws_body(CHUNKED_SIGNATURES)
        self.assertEqual(len(body), 66824)
        self.assertEqual(decode(self.credentials, self.view.headers, body), (AWS_PAYLOAD, {}))

    def test_reference_encoder_reproduces_the_signatures(self):
        body, signatures = aws_chunked(AWS_PAYLOAD, [65536, 1024], seed=CHUNKED_SEED,
                                       key=signing_key(AWS_SECRET_KEY, "20130524"),
                                       timestamp="20130524T000000Z", scope=AWS_SCOPE)
        self.assertEqual(signatures, CHUNKED_SIGNATURES)
        self.assertEqual(body, aws_body(CHUNKED_SIGNATURES))

    @settings(deadline=None, max_examples=30)
    @given(st.lists(st.integers(0, 66824), max_size=12))
    def test_any_split(self, cuts):
        body = aws_body(CHUNKED_SIGNATURES)
        self.assertEqual(decode(self.credentials, self.view.headers, body, sorted(cuts)),
                         (AWS_PAYLOAD, {}))

    def test_changed_byte(self):
        body = bytearray(aws_body(CHUNKED_SIGNATURES))
        body[66000] = ord("b")
        self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers, bytes(body))

    def test_changed_signature(self):
        for index in range(3):
            signatures = list(CHUNKED_SIGNATURES)
            signatures[index] = signatures[index][::-1]
            self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers,
                                   aws_body(signatures))

    def test_chunks_cannot_be_dropped_or_reordered(self):
        first = b"10000;chunk-signature=" + CHUNKED_SIGNATURES[0].encode() + b"\r\n" + b"a" * 65536 + b"\r\n"
        second = b"400;chunk-signature=" + CHUNKED_SIGNATURES[1].encode() + b"\r\n" + b"a" * 1024 + b"\r\n"
        last = b"0;chunk-signature=" + CHUNKED_SIGNATURES[2].encode() + b"\r\n\r\n"
        headers = dict(self.view.headers)
        del headers["x-amz-decoded-content-length"]
        for body in (second + first + last, first + last, second + last):
            self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, headers, body)

    def test_signatures_belong_to_their_request(self):
        # The same body under another request's seed signature fails.
        self.assertDecodeFails("SignatureDoesNotMatch", signed_credentials(CHUNKED_SEED),
                               self.view.headers, aws_body(CHUNKED_SIGNATURES))

    def test_missing_chunk_signature(self):
        body = aws_body(CHUNKED_SIGNATURES).replace(b";chunk-signature=" + CHUNKED_SIGNATURES[1].encode(), b"")
        self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers, body)

    def test_truncated_anywhere(self):
        body = aws_body(CHUNKED_SIGNATURES)
        for cut in [0, 1, 50, 86, 87, 65536, 65624, 65625, 66700, 66739, 66821, 66823]:
            error = self.assertDecodeFails("IncompleteBody", self.credentials, self.view.headers, body[:cut])
            self.assertEqual(error.status, 400)
        # Only the blank line closing the body may be left out.
        self.assertEqual(decode(self.credentials, self.view.headers, body[:-2]), (AWS_PAYLOAD, {}))


class AwsTrailerExampleTests(DecodeFailures, SynchronousTestCase):
    """AWS S3 API reference, "Including Trailing Headers (Chunked Upload)"."""

    def setUp(self):
        self.view = aws_view(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", TRAILER_SEED,
            "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
            "x-amz-storage-class;x-amz-trailer", **{"x-amz-trailer": "x-amz-checksum-crc32c"})
        self.credentials = authenticate(self.view, AWS_SECRETS.get, AWS_NOW)

    def body(self, checksum=b"sOO8/Q==", signature=TRAILER_SIGNATURE.encode()):
        lines = b"x-amz-checksum-crc32c:" + checksum + b"\r\n"
        if signature is not None:
            lines += b"x-amz-trailer-signature:" + signature + b"\r\n"
        return aws_body(TRAILER_SIGNATURES, lines)

    def test_decodes(self):
        body = self.body()
        self.assertEqual(len(body), 66946)
        self.assertEqual(decode(self.credentials, self.view.headers, body),
                         (AWS_PAYLOAD, {"x-amz-checksum-crc32c": "sOO8/Q=="}))

    def test_reference_encoder_reproduces_the_signatures(self):
        body, signatures = aws_chunked(
            AWS_PAYLOAD, [65536, 1024], seed=TRAILER_SEED, key=signing_key(AWS_SECRET_KEY, "20130524"),
            timestamp="20130524T000000Z", scope=AWS_SCOPE,
            trailer=("x-amz-checksum-crc32c", "sOO8/Q=="), trailer_signed=True)
        self.assertEqual(signatures, TRAILER_SIGNATURES + [TRAILER_SIGNATURE])
        self.assertEqual(body, self.body())

    @settings(deadline=None, max_examples=30)
    @given(st.lists(st.integers(0, 66946), max_size=12))
    def test_any_split(self, cuts):
        self.assertEqual(decode(self.credentials, self.view.headers, self.body(), sorted(cuts))[1],
                         {"x-amz-checksum-crc32c": "sOO8/Q=="})

    def test_changed_checksum_fails_the_trailer_signature(self):
        self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers,
                               self.body(checksum=b"AAAAAA=="))

    def test_changed_trailer_signature(self):
        self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers,
                               self.body(signature=TRAILER_SIGNATURE[::-1].encode()))

    def test_missing_trailer_signature(self):
        self.assertDecodeFails("SignatureDoesNotMatch", self.credentials, self.view.headers,
                               self.body(signature=None))

    def test_trailer_never_came(self):
        body = aws_body(TRAILER_SIGNATURES)[:-2]
        self.assertDecodeFails("IncompleteBody", self.credentials, self.view.headers, body)
        # A trailer section closed without the announced checksum.
        self.assertDecodeFails("MalformedTrailerError", self.credentials, self.view.headers, body + b"\r\n")

    def test_blank_line_after_trailer_may_be_missing(self):
        self.assertEqual(decode(self.credentials, self.view.headers, self.body()[:-2])[0], AWS_PAYLOAD)

    def test_right_signature_wrong_checksum(self):
        # A correctly signed trailer whose checksum does not fit the payload.
        credentials = signed_credentials()
        headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                   "x-amz-trailer": "x-amz-checksum-crc32c"}
        body = signed_body(b"payload", [], credentials, trailer=("x-amz-checksum-crc32c", "AAAAAA=="))
        error = self.assertDecodeFails("BadDigest", credentials, headers, body)
        self.assertIn("CRC32C", error.message)


class BotocoreTrailerTests(DecodeFailures, SynchronousTestCase):
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER bodies as boto3 sends them over HTTPS."""

    def setUp(self):
        pin_clocks(self)
        self.client = CapturingClient(endpoint="https://localhost:9670")

    def upload(self, payload, algorithm="CRC32"):
        view, body = self.client.call("put_object", Bucket="bucket", Key="a b+c", Body=payload,
                                      ChecksumAlgorithm=algorithm)
        self.assertEqual(view.headers["x-amz-content-sha256"], "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        self.assertTrue(is_aws_chunked(view.headers))
        return view, body

    def test_every_algorithm(self):
        payload = bytes(range(256)) * 40
        for algorithm in ALGORITHMS:
            view, body = self.upload(payload, algorithm)
            credentials = authenticate(view, SECRETS.get, NOW)
            self.assertEqual(credentials.payload_hash, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
            self.assertIsNone(credentials.chunk_signer)
            self.assertEqual(decode(credentials, view.headers, body),
                             (payload, {header_name(algorithm): checksum_of(algorithm, payload)}))

    def test_empty_body(self):
        view, body = self.upload(b"")
        self.assertEqual(decode(authenticate(view, SECRETS.get, NOW), view.headers, body),
                         (b"", {"x-amz-checksum-crc32": "AAAAAA=="}))

    def test_wrong_checksum(self):
        view, body = self.upload(b"hello")
        tampered = body.replace(checksum_of("CRC32", b"hello").encode(), checksum_of("CRC32", b"jello").encode())
        error = self.assertDecodeFails("BadDigest", authenticate(view, SECRETS.get, NOW), view.headers, tampered)
        self.assertEqual(error.status, 400)

    def test_changed_payload(self):
        view, body = self.upload(b"hello")
        self.assertDecodeFails("BadDigest", authenticate(view, SECRETS.get, NOW), view.headers,
                               body.replace(b"hello", b"jello"))

    def test_decoded_length(self):
        view, body = self.upload(b"hello")
        credentials = authenticate(view, SECRETS.get, NOW)
        for declared in ("4", "6"):
            headers = {**view.headers, "x-amz-decoded-content-length": declared}
            self.assertDecodeFails("IncompleteBody", credentials, headers, body)

    def test_decoded_length_that_is_no_number_of_bytes(self):
        # Found by the fuzzer: 5,000 digits passed isdigit() and made int()
        # raise (a 500); so did a superscript digit.
        view, body = self.upload(b"hello")
        credentials = authenticate(view, SECRETS.get, NOW)
        for declared in ("9" * 5000, "\u00b2", "-5", str(2 ** 63)):
            headers = {**view.headers, "x-amz-decoded-content-length": declared}
            error = self.assertRaises(S3Error, AwsChunkedDecoder, credentials, headers)
            self.assertEqual((error.code, error.status), ("InvalidArgument", 400))


@st.composite
def uploads(draw):
    payload = draw(st.binary(max_size=3000))
    chunk_sizes = draw(st.lists(st.integers(1, 1200), max_size=5))
    mode = draw(st.sampled_from(["signed", "signed-trailer", "unsigned-trailer"]))
    algorithm = draw(st.sampled_from(ALGORITHMS))
    cuts = sorted(draw(st.lists(st.integers(0, 6000), max_size=10)))
    return payload, chunk_sizes, mode, algorithm, cuts


class SpecificationTests(DecodeFailures, SynchronousTestCase):
    """Bodies built to the specification by tests.signing.aws_chunked."""

    def encode(self, payload, chunk_sizes, mode, algorithm="CRC32"):
        trailer = (header_name(algorithm), checksum_of(algorithm, payload))
        headers = {"x-amz-decoded-content-length": str(len(payload))}
        if mode == "unsigned-trailer":
            credentials = Credentials(ACCESS_KEY, 4, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", False, None)
            body = aws_chunked(payload, chunk_sizes, trailer=trailer)[0]
        else:
            credentials = signed_credentials()
            body = signed_body(payload, chunk_sizes, credentials,
                               trailer=trailer if mode == "signed-trailer" else None)
        headers["x-amz-content-sha256"] = {
            "signed": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "signed-trailer": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            "unsigned-trailer": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}[mode]
        if mode != "signed":
            headers["x-amz-trailer"] = trailer[0]
        return credentials, headers, body, ({} if mode == "signed" else dict([trailer]))

    @settings(deadline=None)
    @given(uploads())
    def test_same_output_however_split(self, upload):
        payload, chunk_sizes, mode, algorithm, cuts = upload
        credentials, headers, body, trailers = self.encode(payload, chunk_sizes, mode, algorithm)
        self.assertEqual(decode(credentials, headers, body, cuts), (payload, trailers))

    def test_byte_by_byte(self):
        payload = bytes(range(256)) * 3
        for mode in ("signed", "signed-trailer", "unsigned-trailer"):
            credentials, headers, body, trailers = self.encode(payload, [100, 1, 300], mode)
            decoder = AwsChunkedDecoder(credentials, headers)
            out = b"".join(piece for offset in range(len(body))
                           for piece in decoder.feed(body[offset:offset + 1]))
            self.assertEqual((out, decoder.finish()), (payload, trailers))

    def test_every_truncation_fails(self):
        for mode in ("signed", "signed-trailer", "unsigned-trailer"):
            credentials, headers, body, _ = self.encode(b"0123456789" * 5, [7, 20], mode)
            for cut in range(len(body) - 2):
                self.assertRaises(S3Error, decode, credentials, headers, body[:cut])

    def test_signed_chunks_are_released_only_once_verified(self):
        credentials, headers, body, _ = self.encode(b"x" * 1000, [600], "signed")
        decoder = AwsChunkedDecoder(credentials, headers)
        header_end = body.index(b"\r\n") + 2
        self.assertEqual(decoder.feed(body[:header_end + 599]), [])
        released = decoder.feed(body[header_end + 599:header_end + 600])
        self.assertEqual(b"".join(released), b"x" * 600)

    def test_unsigned_chunks_stream(self):
        credentials, headers, body, _ = self.encode(b"x" * 1000, [], "unsigned-trailer")
        decoder = AwsChunkedDecoder(credentials, headers)
        self.assertEqual(decoder.feed(body[:10]), [b"x" * 5])

    def test_payload_is_not_copied(self):
        # Each payload piece is a view of the bytes fed, never a copy.
        credentials, headers, body, _ = self.encode(b"x" * 1000, [600], "signed")
        decoder = AwsChunkedDecoder(credentials, headers)
        pieces = decoder.feed(body)
        self.assertTrue(all(isinstance(p, memoryview) and p.obj is body for p in pieces))

    def test_buffer_holds_at_most_one_chunk(self):
        payload = bytes(1 << 20)
        credentials, headers, body, _ = self.encode(payload, [65536] * 16, "signed")
        decoder = AwsChunkedDecoder(credentials, headers)
        largest = 0
        for offset in range(0, len(body), 1000):
            decoder.feed(body[offset:offset + 1000])
            largest = max(largest, sum(map(len, decoder._held)) + len(decoder._buf))
        decoder.finish()
        self.assertLessEqual(largest, 65536)

    def test_framing_errors(self):
        credentials, headers, body, _ = self.encode(b"hello", [], "unsigned-trailer")
        for broken in [
            b"0x5\r\nhello\r\n" + body[10:],
            b" 5\r\nhello\r\n" + body[10:],
            b"5_0\r\nhello\r\n" + body[10:],
            b"z\r\nhello\r\n" + body[10:],
            b"5\r\nhelloXY" + body[10:],
            b"5\nhello\r\n" + body[10:],
            b"5;" + b"x" * 5000 + b"\r\nhello\r\n" + body[10:],
            b"1" * 17 + b"\r\n",
            body + b"extra",
        ]:
            self.assertDecodeFails("InvalidRequest", credentials, headers, broken)

    def test_trailer_errors(self):
        credentials, headers, body, _ = self.encode(b"hello", [], "unsigned-trailer")
        end = body.index(b"0\r\n") + 3
        valid = body[end:-2]
        for trailer_section in [
            b"x-amz-checksum-crc32\r\n",
            b":AAAA\r\n" + valid,
            b"x-amz-checksum-sha1:AAAA\r\n" + valid,
            valid + valid,
            b"x-amz-meta-late:1\r\n" + valid,
            b"",
            b"y" * 2000 + b":1\r\n" + (b"x" * 2000 + b":1\r\n") * 10,
        ]:
            self.assertDecodeFails("MalformedTrailerError", credentials, headers,
                                   body[:end] + trailer_section + b"\r\n")

    def test_oversized_signed_chunk(self):
        credentials, headers, body, _ = self.encode(b"x" * 100, [], "signed")
        decoder = AwsChunkedDecoder(credentials, headers)
        decoder.max_signed_chunk_bytes = 99
        error = self.assertRaises(S3Error, decoder.feed, body)
        self.assertEqual(error.code, "InvalidRequest")

    def test_more_than_declared_fails_early(self):
        credentials, headers, body, _ = self.encode(b"x" * 100, [], "signed")
        decoder = AwsChunkedDecoder(credentials, {**headers, "x-amz-decoded-content-length": "99"})
        error = self.assertRaises(S3Error, decoder.feed, body[:90])
        self.assertEqual(error.code, "IncompleteBody")

    def test_without_declared_length(self):
        credentials, headers, body, _ = self.encode(b"x" * 100, [30], "signed")
        del headers["x-amz-decoded-content-length"]
        self.assertEqual(decode(credentials, headers, body)[0], b"x" * 100)


class HeaderTests(SynchronousTestCase):
    unsigned = Credentials(ACCESS_KEY, 4, "UNSIGNED-PAYLOAD", True, None)

    def assertRefused(self, code, credentials, headers):
        error = self.assertRaises(S3Error, AwsChunkedDecoder, credentials, headers)
        self.assertEqual(error.code, code, error.message)

    def test_refused_combinations(self):
        signed = signed_credentials()
        self.assertRefused("InvalidRequest", self.unsigned,
                           {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"})
        self.assertRefused("InvalidRequest", None,
                           {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                            "x-amz-trailer": "x-amz-checksum-crc32"})
        self.assertRefused("InvalidRequest", signed,
                           {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"})
        self.assertRefused("InvalidRequest", self.unsigned,
                           {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                            "x-amz-trailer": "x-amz-meta-foo"})
        self.assertRefused("InvalidRequest", self.unsigned,
                           {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                            "x-amz-trailer": "x-amz-checksum-crc32,x-amz-checksum-sha1"})
        self.assertRefused("InvalidArgument", signed,
                           {"x-amz-content-sha256": "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"})
        self.assertRefused("InvalidArgument", signed,
                           {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                            "x-amz-decoded-content-length": "-1"})

    def test_aws_chunked_without_streaming_payload_hash(self):
        # Content-Encoding: aws-chunked under a presigned URL: chunks without signatures.
        headers = {"content-encoding": "gzip, aws-chunked"}
        self.assertTrue(is_aws_chunked(headers))
        body = aws_chunked(b"hello world", [5])[0]
        self.assertEqual(decode(self.unsigned, headers, body), (b"hello world", {}))
        self.assertEqual(decode(None, headers, body), (b"hello world", {}))

    def test_is_aws_chunked(self):
        self.assertTrue(is_aws_chunked({"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}))
        self.assertTrue(is_aws_chunked({"content-encoding": "AWS-Chunked"}))
        self.assertFalse(is_aws_chunked({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}))
        self.assertFalse(is_aws_chunked({"content-encoding": "gzip"}))
        self.assertFalse(is_aws_chunked({}))
