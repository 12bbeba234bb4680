"""S3 details SDKs rely on (issue 3), through boto3 against a real node:
conditional writes, checksums (single and multipart, composite and
full-object), GetObjectAttributes, and GET/HEAD by part number."""

import base64
import hashlib
import threading
import zlib

from awscrt import checksums as crt
from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess

MiB = 1024 * 1024


def b64(data):
    return base64.b64encode(data).decode()


def crc32(data):
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def error_code(raised):
    return raised.exception.response["Error"]["Code"]


class DepthTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="depth")

    def test_conditional_writes(self):
        s3 = self.s3
        s3.put_object(Bucket="depth", Key="k", Body=b"first", IfNoneMatch="*")
        with self.assertRaises(ClientError) as raised:
            s3.put_object(Bucket="depth", Key="k", Body=b"second", IfNoneMatch="*")
        self.assertEqual(error_code(raised), "PreconditionFailed")
        etag = s3.head_object(Bucket="depth", Key="k")["ETag"]
        with self.assertRaises(ClientError) as raised:
            s3.put_object(Bucket="depth", Key="k", Body=b"third", IfMatch='"0000"')
        self.assertEqual(error_code(raised), "PreconditionFailed")
        s3.put_object(Bucket="depth", Key="k", Body=b"fourth", IfMatch=etag)
        self.assertEqual(s3.get_object(Bucket="depth", Key="k")["Body"].read(), b"fourth")
        with self.assertRaises(ClientError) as raised:
            s3.put_object(Bucket="depth", Key="absent", Body=b"x", IfMatch=etag)
        self.assertEqual(error_code(raised), "NoSuchKey")

    def test_racing_creators_exactly_one_wins(self):
        outcomes = []

        def create(n):
            client = self.node.client()
            try:
                client.put_object(Bucket="depth", Key="race", Body=f"writer {n}".encode(),
                                  IfNoneMatch="*")
                outcomes.append(("won", n))
            except ClientError as e:
                outcomes.append((e.response["Error"]["Code"], n))

        threads = [threading.Thread(target=create, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        winners = [n for outcome, n in outcomes if outcome == "won"]
        self.assertEqual(len(winners), 1, outcomes)
        self.assertEqual({o for o, _ in outcomes} - {"won"}, {"PreconditionFailed"})
        body = self.s3.get_object(Bucket="depth", Key="race")["Body"].read()
        self.assertEqual(body, f"writer {winners[0]}".encode())

    def test_conditional_complete_multipart(self):
        s3 = self.s3
        s3.put_object(Bucket="depth", Key="mp", Body=b"exists")
        upload = s3.create_multipart_upload(Bucket="depth", Key="mp")["UploadId"]
        part = s3.upload_part(Bucket="depth", Key="mp", UploadId=upload, PartNumber=1,
                              Body=b"tail")
        with self.assertRaises(ClientError) as raised:
            s3.complete_multipart_upload(
                Bucket="depth", Key="mp", UploadId=upload, IfNoneMatch="*",
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        self.assertEqual(error_code(raised), "PreconditionFailed")
        self.assertEqual(s3.get_object(Bucket="depth", Key="mp")["Body"].read(), b"exists")

    def test_single_put_checksums_stored_and_returned(self):
        s3 = self.s3
        data = b"checksum me " * 1000
        expected = {
            "CRC32": crc32(data),
            "CRC32C": b64(crt.crc32c(data).to_bytes(4, "big")),
            "CRC64NVME": b64(crt.crc64nvme(data).to_bytes(8, "big")),
            "SHA1": b64(hashlib.sha1(data).digest()),
            "SHA256": b64(hashlib.sha256(data).digest()),
        }
        for algorithm, value in expected.items():
            key = f"sum-{algorithm}"
            put = s3.put_object(Bucket="depth", Key=key, Body=data, ChecksumAlgorithm=algorithm)
            self.assertEqual(put[f"Checksum{algorithm}"], value)
            got = s3.get_object(Bucket="depth", Key=key, ChecksumMode="ENABLED")
            self.assertEqual(got[f"Checksum{algorithm}"], value)
            self.assertEqual(got["Body"].read(), data)
            head = s3.head_object(Bucket="depth", Key=key, ChecksumMode="ENABLED")
            self.assertEqual(head[f"Checksum{algorithm}"], value)
        with self.assertRaises(ClientError) as raised:
            s3.put_object(Bucket="depth", Key="bad", Body=data, ChecksumCRC32=crc32(b"other"))
        self.assertEqual(error_code(raised), "BadDigest")
        with self.assertRaises(ClientError):
            s3.head_object(Bucket="depth", Key="bad")

    def _multipart(self, key, algorithm, kind=None):
        s3 = self.s3
        parts = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
        extra = {"ChecksumType": kind} if kind else {}
        upload = s3.create_multipart_upload(Bucket="depth", Key=key,
                                            ChecksumAlgorithm=algorithm, **extra)["UploadId"]
        done = []
        for number, data in enumerate(parts, 1):
            result = s3.upload_part(Bucket="depth", Key=key, UploadId=upload, PartNumber=number,
                                    Body=data, ChecksumAlgorithm=algorithm)
            done.append({"PartNumber": number, "ETag": result["ETag"],
                         f"Checksum{algorithm}": result[f"Checksum{algorithm}"]})
        completed = s3.complete_multipart_upload(Bucket="depth", Key=key, UploadId=upload,
                                                 MultipartUpload={"Parts": done})
        return parts, done, completed

    def test_multipart_composite_checksum(self):
        parts, done, completed = self._multipart("composite", "SHA256")
        digests = b"".join(hashlib.sha256(p).digest() for p in parts)
        expected = f"{b64(hashlib.sha256(digests).digest())}-3"
        self.assertEqual(completed["ChecksumSHA256"], expected)
        head = self.s3.head_object(Bucket="depth", Key="composite", ChecksumMode="ENABLED")
        self.assertEqual(head["ChecksumSHA256"], expected)
        part2 = self.s3.head_object(Bucket="depth", Key="composite", PartNumber=2,
                                    ChecksumMode="ENABLED")
        self.assertEqual(part2["ChecksumSHA256"], b64(hashlib.sha256(parts[1]).digest()))

    def test_multipart_full_object_checksum(self):
        parts, _, completed = self._multipart("full", "CRC64NVME")
        whole = b"".join(parts)
        expected = b64(crt.crc64nvme(whole).to_bytes(8, "big"))
        self.assertEqual(completed["ChecksumCRC64NVME"], expected)
        parts, _, completed = self._multipart("full32", "CRC32", kind="FULL_OBJECT")
        self.assertEqual(completed["ChecksumCRC32"], crc32(b"".join(parts)))
        with self.assertRaises(ClientError) as raised:
            self.s3.create_multipart_upload(Bucket="depth", Key="x", ChecksumAlgorithm="SHA1",
                                            ChecksumType="FULL_OBJECT")
        self.assertEqual(error_code(raised), "InvalidRequest")

    def test_wrong_part_checksum_at_completion_is_invalid_part(self):
        s3 = self.s3
        upload = s3.create_multipart_upload(Bucket="depth", Key="wrong",
                                            ChecksumAlgorithm="CRC32")["UploadId"]
        part = s3.upload_part(Bucket="depth", Key="wrong", UploadId=upload, PartNumber=1,
                              Body=b"data", ChecksumAlgorithm="CRC32")
        with self.assertRaises(ClientError) as raised:
            s3.complete_multipart_upload(
                Bucket="depth", Key="wrong", UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"],
                                            "ChecksumCRC32": crc32(b"not data")}]})
        self.assertEqual(error_code(raised), "InvalidPart")

    def test_get_and_head_by_part_number(self):
        parts, _, _ = self._multipart("parts", "CRC32")
        s3 = self.s3
        got = s3.get_object(Bucket="depth", Key="parts", PartNumber=2)
        self.assertEqual(got["Body"].read(), parts[1])
        self.assertEqual(got["PartsCount"], 3)
        self.assertEqual(got["ContentRange"], f"bytes {5 * MiB}-{10 * MiB - 1}/{10 * MiB + 4}")
        head = s3.head_object(Bucket="depth", Key="parts", PartNumber=3)
        self.assertEqual(head["ContentLength"], 4)
        with self.assertRaises(ClientError) as raised:
            s3.get_object(Bucket="depth", Key="parts", PartNumber=4)
        self.assertEqual(raised.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        s3.put_object(Bucket="depth", Key="single", Body=b"whole")
        self.assertEqual(s3.get_object(Bucket="depth", Key="single", PartNumber=1)["Body"].read(),
                         b"whole")

    def test_get_object_attributes(self):
        parts, _, completed = self._multipart("attrs", "CRC32")
        attributes = self.s3.get_object_attributes(
            Bucket="depth", Key="attrs",
            ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
        self.assertEqual(attributes["ETag"], completed["ETag"].strip('"'))
        self.assertEqual(attributes["ObjectSize"], sum(len(p) for p in parts))
        self.assertEqual(attributes["StorageClass"], "STANDARD")
        self.assertEqual(attributes["Checksum"]["ChecksumCRC32"], completed["ChecksumCRC32"])
        self.assertEqual(attributes["ObjectParts"]["TotalPartsCount"], 3)
        self.assertEqual([p["Size"] for p in attributes["ObjectParts"]["Parts"]],
                         [len(p) for p in parts])
        self.assertEqual(attributes["ObjectParts"]["Parts"][0]["ChecksumCRC32"], crc32(parts[0]))
        with self.assertRaises(ClientError) as raised:
            self.s3.get_object_attributes(Bucket="depth", Key="missing", ObjectAttributes=["ETag"])
        self.assertEqual(error_code(raised), "NoSuchKey")


class PartCopyTests(TestCase):
    def test_whole_and_ranged_part_copies(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="copies")
        source = bytes(range(256)) * (24 * 1024)  # 6 MiB
        s3.put_object(Bucket="copies", Key="src", Body=source)
        upload = s3.create_multipart_upload(Bucket="copies", Key="dst")["UploadId"]
        whole = s3.upload_part_copy(Bucket="copies", Key="dst", UploadId=upload, PartNumber=1,
                                    CopySource={"Bucket": "copies", "Key": "src"})
        self.assertEqual(whole["CopyPartResult"]["ETag"].strip('"'),
                         hashlib.md5(source).hexdigest())
        ranged = s3.upload_part_copy(Bucket="copies", Key="dst", UploadId=upload, PartNumber=2,
                                     CopySource={"Bucket": "copies", "Key": "src"},
                                     CopySourceRange="bytes=100-199")
        self.assertEqual(ranged["CopyPartResult"]["ETag"].strip('"'),
                         hashlib.md5(source[100:200]).hexdigest())
        s3.complete_multipart_upload(
            Bucket="copies", Key="dst", UploadId=upload, MultipartUpload={"Parts": [
                {"PartNumber": 1, "ETag": whole["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": ranged["CopyPartResult"]["ETag"]}]})
        got = s3.get_object(Bucket="copies", Key="dst")["Body"].read()
        self.assertEqual(got, source + source[100:200])


class UploadListingTests(TestCase):
    def test_list_uploads_pages_with_delimiter(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="uploads")
        keys = ["a/1", "a/2", "b", "c/1", "d"]
        ids = {k: s3.create_multipart_upload(Bucket="uploads", Key=k)["UploadId"] for k in keys}
        seen, kwargs = [], {}
        while True:
            page = s3.list_multipart_uploads(Bucket="uploads", Delimiter="/", MaxUploads=2,
                                             **kwargs)
            seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
            if not page["IsTruncated"]:
                break
            kwargs = {"KeyMarker": page["NextKeyMarker"],
                      "UploadIdMarker": page.get("NextUploadIdMarker", "")}
        self.assertEqual(sorted(seen, key=str),
                         sorted(["a/", ("b", ids["b"]), "c/", ("d", ids["d"])], key=str))
        empty = s3.list_multipart_uploads(Bucket="uploads", MaxUploads=0)
        self.assertFalse(empty["IsTruncated"])
        parts = s3.list_parts(Bucket="uploads", Key="b", UploadId=ids["b"], MaxParts=0)
        self.assertFalse(parts["IsTruncated"])
