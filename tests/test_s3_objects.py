"""Object operations against a real node through boto3 (default settings)
and raw HTTP: PutObject/GetObject round trips, Content-MD5 and checksums,
stored headers and user metadata, ranges, conditional requests, response-*
overrides, HeadObject, DeleteObject(s), CopyObject and awkward keys."""

import base64
import datetime
import hashlib
import os
import zlib
from email.utils import formatdate
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote_plus

from botocore.handlers import set_list_objects_encoding_type_url
from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions
from tests.signing import AWKWARD_KEYS

MiB = 1024 * 1024
CHUNK = 4 * MiB


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# Keys that must survive a round trip and listings byte for byte: the
# signing tests' awkward keys plus XML's special characters.
KEYS = sorted(set(AWKWARD_KEYS + [
    "xml <unsafe> & 'quoted' \"double\"",
    "&amp; is not an entity",
    "]]> ends cdata",
    "/leading-slash",
    "%2F-encoded-slash-literal",
    "a+b c%d",
    "日本語/ファイル.txt",
    " leading space",
    "trailing space ",
    "tab\tinside",
]))


def unencoded_client(node):
    """A boto3 client that lists without encoding-type=url (boto3 adds it
    to every listing and decodes the answer)."""
    s3 = node.client()
    for operation in ("ListObjects", "ListObjectsV2"):
        s3.meta.events.unregister(f"before-parameter-build.s3.{operation}",
                                  set_list_objects_encoding_type_url)
    return s3


class ObjectTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")

    def put(self, key, body, **kwargs):
        return self.s3.put_object(Bucket="bkt", Key=key, Body=body, **kwargs)

    def get(self, key, **kwargs):
        return self.s3.get_object(Bucket="bkt", Key=key, **kwargs)

    def test_round_trips_inline_and_chunked(self):
        sizes = [0, 1, 4095, 4096, 4097, 100_000, CHUNK, CHUNK + 1, 2 * CHUNK + 12345]
        bodies = {}
        for size in sizes:
            body = os.urandom(size)
            bodies[size] = body
            put = self.put(f"obj-{size}", body)
            self.assertEqual(put["ETag"], f'"{md5_hex(body)}"')
        for size, body in bodies.items():
            got = self.get(f"obj-{size}")
            self.assertEqual(got["ContentLength"], size)
            self.assertEqual(got["ETag"], f'"{md5_hex(body)}"')
            self.assertEqual(got["AcceptRanges"], "bytes")
            data = got["Body"].read()
            self.assertEqual(len(data), size)
            self.assertTrue(data == body, f"{size}-byte object came back different")
            head = self.s3.head_object(Bucket="bkt", Key=f"obj-{size}")
            self.assertEqual((head["ContentLength"], head["ETag"]),
                             (size, f'"{md5_hex(body)}"'))
            self.assertEqual(head["LastModified"], got["LastModified"])
        # Overwrite: a big object replaced by a small one and back.
        self.put("obj-4097", b"small now")
        self.assertEqual(self.get("obj-4097")["Body"].read(), b"small now")
        self.put("obj-1", bodies[CHUNK + 1])
        self.assertEqual(self.get("obj-1")["Body"].read(), bodies[CHUNK + 1])
        # Last-Modified is the time of the write, to the second.
        now = datetime.datetime.now(datetime.timezone.utc)
        modified = self.s3.head_object(Bucket="bkt", Key="obj-1")["LastModified"]
        self.assertLess(abs((now - modified).total_seconds()), 5)
        # Missing keys.
        response = self.assertS3Error("NoSuchKey", 404, self.get, "missing")
        self.assertEqual(response["Error"]["Key"], "missing")
        self.assertS3Error("404", 404, self.s3.head_object, Bucket="bkt", Key="missing")
        self.assertS3Error("NoSuchBucket", 404, self.s3.get_object, Bucket="nobkt", Key="x")

    def test_content_md5_and_checksums(self):
        for size in (10, 5 * MiB):
            body = os.urandom(size)
            key = f"md5-{size}"
            self.put(key, body, ContentMD5=md5_b64(body))
            self.assertEqual(self.get(key)["Body"].read(), body)
            # A wrong digest stores nothing: the old object stays.
            other = os.urandom(size)
            self.assertS3Error("BadDigest", 400, self.put, key, other,
                               ContentMD5=md5_b64(body))
            self.assertEqual(self.get(key)["Body"].read(), body)
            self.assertS3Error("BadDigest", 400, self.put, key + "-new", other,
                               ContentMD5=md5_b64(body))
            self.assertS3Error("NoSuchKey", 404, self.get, key + "-new")
            # A wrong CRC32 is refused the same way.
            self.assertS3Error("BadDigest", 400, self.put, key + "-crc", other,
                               ChecksumCRC32=crc32_b64(body))
            self.assertS3Error("NoSuchKey", 404, self.get, key + "-crc")
            put = self.put(key + "-crc", other, ChecksumCRC32=crc32_b64(other))
            self.assertEqual(put["ChecksumCRC32"], crc32_b64(other))
        # Digests that are not digests at all.
        for bad in ("not base64!", base64.b64encode(b"short").decode()):
            reply = s3http.request(self.node, "PUT", "/bkt/bad-md5", body=b"hello",
                                   headers={"Content-MD5": bad})
            self.assertErrorReply(reply, "InvalidDigest", 400)
        self.assertS3Error("NoSuchKey", 404, self.get, "bad-md5")
        # A signed payload hash that does not match the body.
        reply = s3http.request(self.node, "PUT", "/bkt/bad-sha", body=b"hello",
                               payload_hash=hashlib.sha256(b"other").hexdigest())
        self.assertErrorReply(reply, "XAmzContentSHA256Mismatch", 400)
        self.assertS3Error("NoSuchKey", 404, self.get, "bad-sha")
        # Listing shows only what was stored.
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket="bkt")["Contents"]]
        self.assertEqual(keys, ["md5-10", "md5-10-crc", "md5-5242880", "md5-5242880-crc"])

    def test_stored_headers_and_user_metadata(self):
        expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        self.put("doc.html", b"<p>hi</p>", ContentType="text/html; charset=utf-8",
                 CacheControl="max-age=60, public",
                 ContentDisposition='attachment; filename="doc.html"',
                 ContentEncoding="identity", ContentLanguage="en-GB",
                 Expires=expires,
                 Metadata={"colour": "blue", "Mixed-Case": "Value With Spaces",
                           "empty": ""})
        for response in (self.get("doc.html"),
                         self.s3.head_object(Bucket="bkt", Key="doc.html")):
            self.assertEqual(response["ContentType"], "text/html; charset=utf-8")
            self.assertEqual(response["CacheControl"], "max-age=60, public")
            self.assertEqual(response["ContentDisposition"], 'attachment; filename="doc.html"')
            self.assertEqual(response["ContentEncoding"], "identity")
            self.assertEqual(response["ContentLanguage"], "en-GB")
            self.assertEqual(response["ResponseMetadata"]["HTTPHeaders"]["expires"],
                             "Wed, 02 Jan 2030 03:04:05 GMT")
            # S3 folds metadata names to lower case.
            self.assertEqual(response["Metadata"], {"colour": "blue",
                                                    "mixed-case": "Value With Spaces",
                                                    "empty": ""})
        # gzip stays as stored: the node never decodes bodies.
        packed = zlib.compress(b"text " * 100)
        self.put("packed", packed, ContentEncoding="gzip")
        got = self.get("packed")
        self.assertEqual((got["ContentEncoding"], got["Body"].read()), ("gzip", packed))
        # No Content-Type given: S3's default.
        reply = s3http.request(self.node, "PUT", "/bkt/untyped", body=b"abc")
        self.assertEqual(reply.status, 200, reply.body)
        reply = s3http.request(self.node, "GET", "/bkt/untyped")
        self.assertEqual(reply.headers["content-type"], "binary/octet-stream")
        # Metadata over 2 KB is refused.
        self.assertS3Error("MetadataTooLarge", 400, self.put, "big-meta", b"x",
                           Metadata={"m": "v" * 2100})
        self.assertS3Error("NoSuchKey", 404, self.get, "big-meta")
        # Metadata is replaced, not merged, by an overwrite.
        self.put("doc.html", b"v2", Metadata={"other": "1"})
        got = self.get("doc.html")
        self.assertEqual(got["Metadata"], {"other": "1"})
        self.assertNotIn("CacheControl", got)
        self.assertEqual(got["ContentType"], "binary/octet-stream")

    def test_non_ascii_header_values_round_trip(self):
        # boto3 refuses non-ASCII metadata, but other clients (Go's, curl,
        # browsers) send header bytes as they are: they come back the same,
        # but user metadata RFC 2047-encoded, as S3 returns it.
        encoded = "=?UTF-8?B?" + base64.b64encode("café ünïcode ☃".encode()).decode() + "?="
        sent = {"x-amz-meta-name": "café ünïcode ☃",
                "Content-Disposition": 'attachment; filename="naïve résumé.txt"',
                "Content-Type": "text/plain; charset=utf-8"}
        reply = s3http.request(self.node, "PUT", "/bkt/utf8", body=b"x", headers=sent,
                               utf8_headers=True)
        self.assertEqual(reply.status, 200, reply.body)
        for method in ("GET", "HEAD"):
            reply = s3http.request(self.node, method, "/bkt/utf8", utf8_headers=True)
            self.assertEqual(reply.status, 200, reply.body)
            self.assertEqual(reply.headers["x-amz-meta-name"], encoded)
            self.assertEqual(reply.headers["content-disposition"],
                             sent["Content-Disposition"])
        # A response-* override given in the query (UTF-8, percent-encoded).
        disposition = 'inline; filename="über.txt"'
        reply = s3http.request(
            self.node, "GET",
            "/bkt/utf8?response-content-disposition=" + quote(disposition, safe=""),
            utf8_headers=True)
        self.assertEqual(reply.headers["content-disposition"], disposition)
        # Copies keep them too.
        self.s3.copy_object(Bucket="bkt", Key="utf8-copy", CopySource="bkt/utf8")
        reply = s3http.request(self.node, "GET", "/bkt/utf8-copy", utf8_headers=True)
        self.assertEqual(reply.headers["x-amz-meta-name"], encoded)

    def test_ranges(self):
        small = bytes(range(256)) * 4
        big = os.urandom(2 * CHUNK + 1000)
        self.put("small", small)
        self.put("big", big)
        for key, body in (("small", small), ("big", big)):
            size = len(body)
            cases = [
                ("bytes=0-0", 0, 0),
                ("bytes=0-99", 0, 99),
                ("bytes=10-", 10, size - 1),
                ("bytes=-100", size - 100, size - 1),
                ("bytes=-1", size - 1, size - 1),
                (f"bytes={size - 5}-{size + 1000}", size - 5, size - 1),
                (f"bytes=-{size + 1000}", 0, size - 1),
                (f"bytes={size - 1}-", size - 1, size - 1),
            ]
            if key == "big":
                cases += [(f"bytes={CHUNK - 10}-{CHUNK + 10}", CHUNK - 10, CHUNK + 10),
                          (f"bytes={CHUNK}-{2 * CHUNK}", CHUNK, 2 * CHUNK),
                          (f"bytes={CHUNK - 1}-{2 * CHUNK + 5}", CHUNK - 1, 2 * CHUNK + 5)]
            for spec, first, last in cases:
                got = self.get(key, Range=spec)
                headers = got["ResponseMetadata"]["HTTPHeaders"]
                self.assertEqual(got["ResponseMetadata"]["HTTPStatusCode"], 206, spec)
                self.assertEqual(got["ContentRange"], f"bytes {first}-{last}/{size}", spec)
                self.assertEqual(int(headers["content-length"]), last - first + 1, spec)
                data = got["Body"].read()
                self.assertTrue(data == body[first:last + 1], f"{key} {spec}")
                self.assertEqual(got["ETag"], f'"{md5_hex(body)}"')
            head = self.s3.head_object(Bucket="bkt", Key=key, Range="bytes=5-9")
            self.assertEqual(head["ResponseMetadata"]["HTTPStatusCode"], 206)
            self.assertEqual((head["ContentLength"], head["ContentRange"]),
                             (5, f"bytes 5-9/{size}"))
            for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
                response = self.assertS3Error("InvalidRange", 416, self.get, key, Range=spec)
                self.assertEqual(response["ResponseMetadata"]["HTTPHeaders"]["content-range"],
                                 f"bytes */{size}")
                reply = s3http.request(self.node, "GET", f"/bkt/{key}",
                                       headers={"Range": spec})
                self.assertErrorReply(reply, "InvalidRange", 416)
                self.assertEqual(reply.headers["content-range"], f"bytes */{size}")
            # What is not one byte range is ignored: the whole object, 200.
            for spec in ("bytes=abc", "items=0-5", "bytes=9-3"):
                got = self.get(key, Range=spec)
                self.assertEqual(got["ResponseMetadata"]["HTTPStatusCode"], 200, spec)
                self.assertTrue(got["Body"].read() == body, spec)

    def test_conditional_requests(self):
        self.put("cond", b"conditional body")
        etag = f'"{md5_hex(b"conditional body")}"'
        modified = self.s3.head_object(Bucket="bkt", Key="cond")["LastModified"]
        past = modified - datetime.timedelta(hours=1)
        future = modified + datetime.timedelta(hours=1)
        for call in (self.s3.get_object, self.s3.head_object):
            args = {"Bucket": "bkt", "Key": "cond"}
            self.assertEqual(call(**args, IfMatch=etag)["ETag"], etag)
            self.assertEqual(call(**args, IfMatch="*")["ETag"], etag)
            self.assertEqual(call(**args, IfMatch=f'"0000", {etag}')["ETag"], etag)
            self.assertEqual(call(**args, IfNoneMatch='"0000"')["ETag"], etag)
            self.assertEqual(call(**args, IfModifiedSince=past)["ETag"], etag)
            self.assertEqual(call(**args, IfUnmodifiedSince=future)["ETag"], etag)
            code = "PreconditionFailed" if call == self.s3.get_object else "412"
            self.assertS3Error(code, 412, call, **args, IfMatch='"0000"')
            self.assertS3Error(code, 412, call, **args, IfUnmodifiedSince=past)
            # If-Match wins over a failing If-Unmodified-Since.
            self.assertEqual(call(**args, IfMatch=etag, IfUnmodifiedSince=past)["ETag"], etag)
            self.assertS3Error("304", 304, call, **args, IfNoneMatch=etag)
            self.assertS3Error("304", 304, call, **args, IfNoneMatch="*")
            self.assertS3Error("304", 304, call, **args, IfModifiedSince=future)
        # A 304 carries the ETag and no body.
        reply = s3http.request(self.node, "GET", "/bkt/cond",
                               headers={"If-None-Match": etag})
        self.assertEqual((reply.status, reply.body, reply.headers["etag"]), (304, b"", etag))
        self.assertTrue(reply.headers["x-amz-request-id"])
        # A 412 is an error document.
        reply = s3http.request(self.node, "GET", "/bkt/cond", headers={"If-Match": '"0"'})
        self.assertErrorReply(reply, "PreconditionFailed", 412)
        # Dates as HTTP dates, by hand.
        reply = s3http.request(self.node, "GET", "/bkt/cond", headers={
            "If-Modified-Since": formatdate(future.timestamp(), usegmt=True)})
        self.assertEqual(reply.status, 304)
        # Conditions are checked before ranges.
        response = self.assertS3Error("PreconditionFailed", 412, self.get, "cond",
                                      IfMatch='"0"', Range="bytes=100-200")
        self.assertNotIn("content-range", response["ResponseMetadata"]["HTTPHeaders"])

    def test_get_by_part_number(self):
        # A single-part object is its own part 1, nothing more.
        self.put("parted", b"whole object")
        got = self.get("parted", PartNumber=1)
        self.assertEqual(got["Body"].read(), b"whole object")
        self.assertS3Error("InvalidPartNumber", 400, self.get, "parted", PartNumber=2)
        self.assertS3Error("InvalidRequest", 400, self.get, "parted", PartNumber=1,
                           Range="bytes=0-1")
        # An empty object has one, empty, part; no range can name it.
        self.put("empty", b"")
        for method in ("GET", "HEAD"):
            reply = s3http.request(self.node, method, "/bkt/empty?partNumber=1")
            self.assertEqual((reply.status, reply.body, reply.headers["content-length"]),
                             (200, b"", "0"))
            self.assertNotIn("content-range", reply.headers)
        # Each part of a multipart object, by GET and HEAD.
        parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 1), b"last part"]
        upload = self.s3.create_multipart_upload(Bucket="bkt", Key="mp")["UploadId"]
        etags = [self.s3.upload_part(Bucket="bkt", Key="mp", UploadId=upload, PartNumber=n,
                                     Body=body)["ETag"] for n, body in enumerate(parts, 1)]
        self.s3.complete_multipart_upload(
            Bucket="bkt", Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in enumerate(etags, 1)]})
        offset, size = 0, sum(map(len, parts))
        for number, body in enumerate(parts, 1):
            got = self.get("mp", PartNumber=number)
            self.assertEqual(got["ResponseMetadata"]["HTTPStatusCode"], 206)
            self.assertEqual(got["PartsCount"], 3)
            self.assertEqual(got["ContentRange"],
                             f"bytes {offset}-{offset + len(body) - 1}/{size}")
            self.assertTrue(got["Body"].read() == body, number)
            head = self.s3.head_object(Bucket="bkt", Key="mp", PartNumber=number)
            self.assertEqual(head["ContentLength"], len(body))
            offset += len(body)
        self.assertS3Error("InvalidPartNumber", 400, self.get, "mp", PartNumber=4)

    def test_conditional_writes(self):
        self.put("cw", b"first", IfNoneMatch="*")
        self.assertS3Error("PreconditionFailed", 412, self.put, "cw", b"second",
                           IfNoneMatch="*")
        self.assertS3Error("PreconditionFailed", 412, self.put, "cw", os.urandom(CHUNK + 1),
                           IfNoneMatch="*")
        etag = self.s3.head_object(Bucket="bkt", Key="cw")["ETag"]
        self.assertEqual(self.get("cw")["Body"].read(), b"first")
        self.assertS3Error("PreconditionFailed", 412, self.put, "cw", b"third",
                           IfMatch='"0000"')
        self.put("cw", b"fourth", IfMatch=etag)
        self.assertEqual(self.get("cw")["Body"].read(), b"fourth")
        self.assertS3Error("NoSuchKey", 404, self.put, "cw-missing", b"x", IfMatch=etag)
        self.assertS3Error("NoSuchKey", 404, self.get, "cw-missing")
        reply = s3http.request(self.node, "PUT", "/bkt/cw", body=b"x",
                               headers={"If-None-Match": etag})
        self.assertErrorReply(reply, "NotImplemented", 501)
        # Racing writers: exactly one creates the key.
        def attempt(n):
            client = self.node.client()
            try:
                client.put_object(Bucket="bkt", Key="race", Body=f"writer {n}".encode(),
                                  IfNoneMatch="*")
                return n
            except client.exceptions.ClientError as e:
                self.assertEqual(e.response["Error"]["Code"], "PreconditionFailed")
                return None
        with ThreadPoolExecutor(8) as pool:
            winners = [n for n in pool.map(attempt, range(8)) if n is not None]
        self.assertEqual(len(winners), 1)
        self.assertEqual(self.get("race")["Body"].read(), f"writer {winners[0]}".encode())
        # A multipart upload completing onto an existing key.
        upload = self.s3.create_multipart_upload(Bucket="bkt", Key="cw")["UploadId"]
        part = self.s3.upload_part(Bucket="bkt", Key="cw", UploadId=upload, PartNumber=1,
                                   Body=b"mp")["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": part}]}
        self.assertS3Error("PreconditionFailed", 412, self.s3.complete_multipart_upload,
                           Bucket="bkt", Key="cw", UploadId=upload, MultipartUpload=parts,
                           IfNoneMatch="*")
        self.assertEqual(self.get("cw")["Body"].read(), b"fourth")
        self.s3.complete_multipart_upload(Bucket="bkt", Key="cw", UploadId=upload,
                                          MultipartUpload=parts)
        self.assertEqual(self.get("cw")["Body"].read(), b"mp")

    def test_concurrent_overwrites_are_never_torn(self):
        bodies = [bytes([n]) * (CHUNK + 1000 * n) for n in range(6)]
        self.put("hot", bodies[0])
        stop = []

        def write(n):
            client = self.node.client()
            for _ in range(3):
                client.put_object(Bucket="bkt", Key="hot", Body=bodies[n])

        def read(_):
            client = self.node.client()
            seen = 0
            while not stop or seen == 0:
                got = client.get_object(Bucket="bkt", Key="hot")
                data = got["Body"].read()
                self.assertIn(data, bodies)
                self.assertEqual(got["ETag"], f'"{md5_hex(data)}"')
                seen += 1
            return seen
        with ThreadPoolExecutor(8) as pool:
            readers = [pool.submit(read, n) for n in range(2)]
            list(pool.map(write, range(6)))
            stop.append(True)
            self.assertTrue(all(r.result() > 0 for r in readers))
        data = self.get("hot")["Body"].read()
        self.assertIn(data, bodies)

    def test_response_overrides(self):
        self.put("over", b"body", ContentType="text/plain", CacheControl="no-cache")
        got = self.get("over", ResponseContentType="application/x-special",
                       ResponseContentDisposition='attachment; filename="x y.bin"',
                       ResponseCacheControl="max-age=5",
                       ResponseContentLanguage="fr",
                       ResponseContentEncoding="br",
                       ResponseExpires=datetime.datetime(2031, 5, 6, 7, 8, 9))
        self.assertEqual(got["Body"].read(), b"body")
        self.assertEqual(got["ContentType"], "application/x-special")
        self.assertEqual(got["ContentDisposition"], 'attachment; filename="x y.bin"')
        self.assertEqual(got["CacheControl"], "max-age=5")
        self.assertEqual(got["ContentLanguage"], "fr")
        self.assertEqual(got["ContentEncoding"], "br")
        self.assertEqual(got["ResponseMetadata"]["HTTPHeaders"]["expires"],
                         "Tue, 06 May 2031 07:08:09 GMT")
        # The stored object is unchanged.
        got = self.get("over")
        self.assertEqual((got["ContentType"], got["CacheControl"]),
                         ("text/plain", "no-cache"))
        self.assertNotIn("ContentLanguage", got)

    def test_delete_object_and_delete_objects(self):
        for name in ("a", "b", "c", "d/e", "big"):
            self.put(name, b"data" if name != "big" else os.urandom(CHUNK + 5))
        deleted = self.s3.delete_object(Bucket="bkt", Key="a")
        self.assertEqual(deleted["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertS3Error("NoSuchKey", 404, self.get, "a")
        # Deleting what is not there succeeds.
        again = self.s3.delete_object(Bucket="bkt", Key="a")
        self.assertEqual(again["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertS3Error("NoSuchBucket", 404, self.s3.delete_object, Bucket="nobkt", Key="a")

        # Recent boto3 sends x-amz-checksum-* rather than Content-MD5.
        captured = []
        self.s3.meta.events.register(
            "before-send.s3.DeleteObjects",
            lambda request, **kw: captured.append(dict(request.headers)))
        result = self.s3.delete_objects(Bucket="bkt", Delete={"Objects": [
            {"Key": "b"}, {"Key": "missing"}, {"Key": "d/e"}]})
        sent = {name.lower() for name in captured[0]}
        self.assertTrue(any(name.startswith("x-amz-checksum-") for name in sent), sent)
        self.assertEqual(sorted(d["Key"] for d in result["Deleted"]), ["b", "d/e", "missing"])
        self.assertNotIn("Errors", result)
        self.assertS3Error("NoSuchKey", 404, self.get, "b")
        self.assertS3Error("NoSuchKey", 404, self.get, "d/e")

        result = self.s3.delete_objects(Bucket="bkt", Delete={
            "Objects": [{"Key": "c"}, {"Key": "big"}], "Quiet": True})
        self.assertNotIn("Deleted", result)
        self.assertNotIn("Errors", result)
        self.assertNotIn("Contents", self.s3.list_objects_v2(Bucket="bkt"))

        # Content-MD5, as older SDKs send it, by hand.
        self.put("m1", b"1")
        self.put("m2", b"2")
        body = (b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b"<Object><Key>m1</Key></Object><Object><Key>m2</Key></Object></Delete>")
        reply = s3http.request(self.node, "POST", "/bkt?delete", body=body,
                               headers={"Content-MD5": md5_b64(body + b" ")})
        self.assertErrorReply(reply, "BadDigest", 400)
        self.assertEqual(self.get("m1")["Body"].read(), b"1")
        reply = s3http.request(self.node, "POST", "/bkt?delete", body=body,
                               headers={"Content-MD5": md5_b64(body)})
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(s3http.texts(reply.xml(), "{s3}Deleted/{s3}Key"), ["m1", "m2"])
        self.assertS3Error("NoSuchKey", 404, self.get, "m1")
        # Neither Content-MD5 nor a checksum: refused, as S3 does.
        self.put("m3", b"3")
        body = b"<Delete><Object><Key>m3</Key></Object></Delete>"
        reply = s3http.request(self.node, "POST", "/bkt?delete", body=body)
        self.assertErrorReply(reply, "InvalidRequest", 400)
        self.assertEqual(self.get("m3")["Body"].read(), b"3")
        # A key too long is reported per key, the others are deleted.
        long_key = "k" * 1025
        result = self.s3.delete_objects(Bucket="bkt", Delete={"Objects": [
            {"Key": "m3"}, {"Key": long_key}]})
        self.assertEqual([d["Key"] for d in result["Deleted"]], ["m3"])
        self.assertEqual([(e["Key"], e["Code"]) for e in result["Errors"]],
                         [(long_key, "KeyTooLongError")])

    def test_copy_object(self):
        self.s3.create_bucket(Bucket="other")
        big = os.urandom(CHUNK + 777)
        self.put("src", b"source bytes", ContentType="text/x-src",
                 Metadata={"origin": "src"}, CacheControl="max-age=1")
        self.put("big src", big, Metadata={"size": "big"})
        src_etag = f'"{md5_hex(b"source bytes")}"'

        copied = self.s3.copy_object(Bucket="bkt", Key="copy", CopySource="bkt/src")
        self.assertEqual(copied["CopyObjectResult"]["ETag"], src_etag)
        got = self.get("copy")
        self.assertEqual(got["Body"].read(), b"source bytes")
        self.assertEqual((got["ContentType"], got["Metadata"], got["CacheControl"], got["ETag"]),
                         ("text/x-src", {"origin": "src"}, "max-age=1", src_etag))

        # Across buckets, with a source key that needs encoding.
        self.s3.copy_object(Bucket="other", Key="big copy+1",
                            CopySource={"Bucket": "bkt", "Key": "big src"})
        got = self.s3.get_object(Bucket="other", Key="big copy+1")
        self.assertTrue(got["Body"].read() == big)
        self.assertEqual((got["Metadata"], got["ETag"]), ({"size": "big"}, f'"{md5_hex(big)}"'))
        # Ranged reads of a copy across its chunks.
        got = self.s3.get_object(Bucket="other", Key="big copy+1",
                                 Range=f"bytes={CHUNK - 3}-{CHUNK + 3}")
        self.assertEqual(got["Body"].read(), big[CHUNK - 3:CHUNK + 4])

        # REPLACE takes the request's metadata and headers.
        self.s3.copy_object(Bucket="other", Key="replaced", CopySource="bkt/src",
                            MetadataDirective="REPLACE", ContentType="text/x-new",
                            Metadata={"fresh": "yes"})
        got = self.s3.get_object(Bucket="other", Key="replaced")
        self.assertEqual((got["ContentType"], got["Metadata"]), ("text/x-new", {"fresh": "yes"}))
        self.assertNotIn("CacheControl", got)
        self.assertEqual(got["Body"].read(), b"source bytes")

        # Copying an object onto itself needs REPLACE.
        response = self.assertS3Error("InvalidRequest", 400, self.s3.copy_object,
                                      Bucket="bkt", Key="src", CopySource="bkt/src")
        self.assertIn("itself", response["Error"]["Message"])
        self.s3.copy_object(Bucket="bkt", Key="src", CopySource="bkt/src",
                            MetadataDirective="REPLACE", Metadata={"origin": "self"},
                            ContentType="text/x-src")
        got = self.get("src")
        self.assertEqual((got["Metadata"], got["Body"].read()), ({"origin": "self"},
                                                                 b"source bytes"))

        # The source is independent of the copy afterwards.
        self.put("src", b"changed")
        self.assertEqual(self.get("copy")["Body"].read(), b"source bytes")
        self.s3.delete_object(Bucket="bkt", Key="big src")
        self.assertTrue(self.s3.get_object(Bucket="other", Key="big copy+1")["Body"].read()
                        == big)

        # Failures.
        self.assertS3Error("NoSuchKey", 404, self.s3.copy_object, Bucket="bkt", Key="x",
                           CopySource="bkt/missing")
        self.assertS3Error("NoSuchBucket", 404, self.s3.copy_object, Bucket="bkt", Key="x",
                           CopySource="nobkt/src")
        self.assertS3Error("NoSuchBucket", 404, self.s3.copy_object, Bucket="nobkt", Key="x",
                           CopySource="bkt/src")
        self.assertS3Error("PreconditionFailed", 412, self.s3.copy_object, Bucket="bkt",
                           Key="x", CopySource="bkt/copy", CopySourceIfMatch='"0000"')
        self.assertS3Error("PreconditionFailed", 412, self.s3.copy_object, Bucket="bkt",
                           Key="x", CopySource="bkt/copy", CopySourceIfNoneMatch=src_etag)
        self.s3.copy_object(Bucket="bkt", Key="x", CopySource="bkt/copy",
                            CopySourceIfMatch=src_etag)
        self.assertEqual(self.get("x")["Body"].read(), b"source bytes")
        self.assertS3Error("InvalidArgument", 400, self.s3.copy_object, Bucket="bkt",
                           Key="y", CopySource="bkt/src", MetadataDirective="MERGE")
        self.assertS3Error("NoSuchKey", 404, self.get, "y")

    def test_awkward_keys(self):
        bodies = {key: key.encode() * 3 for key in KEYS}
        for key, body in bodies.items():
            self.put(key, body)
        for key, body in bodies.items():
            self.assertEqual(self.get(key)["Body"].read(), body, key)
            self.assertEqual(self.s3.head_object(Bucket="bkt", Key=key)["ContentLength"],
                             len(body), key)
        wanted = sorted(KEYS, key=lambda k: k.encode())
        # boto3 lists with encoding-type=url and decodes.
        self.assertEqual([o["Key"] for o in self.s3.list_objects_v2(Bucket="bkt")["Contents"]],
                         wanted)
        self.assertEqual([o["Key"] for o in self.s3.list_objects(Bucket="bkt")["Contents"]],
                         wanted)
        # Without it, keys are XML-escaped, exactly.
        plain = unencoded_client(self.node)
        for operation in (plain.list_objects_v2, plain.list_objects):
            listing = operation(Bucket="bkt")
            self.assertNotIn("EncodingType", listing)
            self.assertEqual([o["Key"] for o in listing["Contents"]], wanted)
        reply = s3http.request(self.node, "GET", "/bkt?list-type=2&prefix=xml")
        self.assertIn(b"<Key>xml &lt;unsafe&gt; &amp; 'quoted' \"double\"</Key>", reply.body)
        # With encoding-type=url, by hand: every key percent-encoded.
        reply = s3http.request(self.node, "GET", "/bkt?list-type=2&encoding-type=url")
        root = reply.xml()
        self.assertEqual(s3http.texts(root, "{s3}EncodingType"), ["url"])
        encoded = s3http.texts(root, "{s3}Contents/{s3}Key")
        self.assertEqual([unquote_plus(k) for k in encoded], wanted)
        for key in encoded:
            self.assertNotIn(" ", key)
            self.assertNotIn("<", key)
        # Prefixes and delimiters with awkward characters.
        listing = plain.list_objects_v2(Bucket="bkt", Prefix="xml <", Delimiter="&")
        self.assertEqual(listing["CommonPrefixes"], [{"Prefix": "xml <unsafe> &"}])
        listing = self.s3.list_objects_v2(Bucket="bkt", Prefix="double/", Delimiter="/")
        self.assertEqual(listing["CommonPrefixes"], [{"Prefix": "double//"}])
        listing = self.s3.list_objects_v2(Bucket="bkt", Prefix="trailing/slash/")
        self.assertEqual([o["Key"] for o in listing["Contents"]], ["trailing/slash/"])
        # Copies and deletes of awkward keys.
        for key in KEYS[:5]:
            self.s3.copy_object(Bucket="bkt", Key=key + "-copy",
                                CopySource={"Bucket": "bkt", "Key": key})
            self.assertEqual(self.get(key + "-copy")["Body"].read(), bodies[key])
        result = self.s3.delete_objects(Bucket="bkt", Delete={
            "Objects": [{"Key": k} for k in KEYS] + [{"Key": k + "-copy"} for k in KEYS[:5]]})
        self.assertEqual(sorted(d["Key"] for d in result["Deleted"]),
                         sorted(KEYS + [k + "-copy" for k in KEYS[:5]]))
        self.assertEqual(self.s3.list_objects_v2(Bucket="bkt")["KeyCount"], 0)

    def test_key_length_limit(self):
        ok = "k" * 1024
        self.put(ok, b"fits")
        self.assertEqual(self.get(ok)["Body"].read(), b"fits")
        for key in ("k" * 1025, "é" * 513, "/" * 1025):
            self.assertS3Error("KeyTooLongError", 400, self.put, key, b"too long")
            self.assertS3Error("KeyTooLongError", 400, self.get, key)
        self.assertS3Error("KeyTooLongError", 400, self.s3.create_multipart_upload,
                           Bucket="bkt", Key="k" * 1025)
        self.assertS3Error("KeyTooLongError", 400, self.s3.copy_object, Bucket="bkt",
                           Key="k" * 1025, CopySource="bkt/" + quote(ok))
        listing = self.s3.list_objects_v2(Bucket="bkt")
        self.assertEqual([o["Key"] for o in listing["Contents"]], [ok])
        self.assertEqual(len(listing["Contents"][0]["Key"].encode()), 1024)

    def test_every_answer_has_a_request_id(self):
        self.put("k", b"v")
        seen = set()
        for method, target in (("GET", "/"), ("GET", "/bkt"), ("HEAD", "/bkt"),
                               ("GET", "/bkt/k"), ("HEAD", "/bkt/k"), ("GET", "/bkt/nokey"),
                               ("HEAD", "/bkt/nokey"), ("GET", "/nobkt"),
                               ("DELETE", "/bkt/nokey"), ("GET", "/bkt?website"),
                               ("PATCH", "/bkt/k")):
            reply = s3http.request(self.node, method, target)
            request_id = reply.headers.get("x-amz-request-id")
            self.assertTrue(request_id, (method, target))
            seen.add(request_id)
            if reply.status >= 400 and method != "HEAD":
                document = reply.error()
                self.assertEqual(document["RequestId"], request_id)
                for name in ("Code", "Message", "Resource"):
                    self.assertTrue(document.get(name), (method, target, reply.body))
        self.assertEqual(len(seen), 11)
        reply = s3http.request(self.node, "GET", "/bkt/nokey")
        self.assertEqual(reply.error()["Resource"], "/bkt/nokey")
        reply = s3http.request(self.node, "GET", "/bkt?website")
        self.assertErrorReply(reply, "NotImplemented", 501)
        reply = s3http.request(self.node, "PATCH", "/bkt/k")
        self.assertErrorReply(reply, "MethodNotAllowed", 405)
