"""Multipart uploads against a real node through boto3: create, upload
part, complete (with the md5-N ETag computed here), abort, ListParts,
ListMultipartUploads, the completion errors (EntityTooSmall, InvalidPart,
InvalidPartOrder, NoSuchUpload) and UploadPartCopy."""

import hashlib
import io
import os

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions
from tests.test_s3_objects import md5_b64, md5_hex

MiB = 1024 * 1024


def multipart_etag(parts):
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


class MultipartTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="mpu")

    def create(self, key, **kwargs):
        return self.s3.create_multipart_upload(Bucket="mpu", Key=key, **kwargs)["UploadId"]

    def upload(self, key, upload_id, number, body, **kwargs):
        return self.s3.upload_part(Bucket="mpu", Key=key, UploadId=upload_id,
                                   PartNumber=number, Body=body, **kwargs)["ETag"]

    def complete(self, key, upload_id, parts):
        return self.s3.complete_multipart_upload(
            Bucket="mpu", Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    def test_upload_complete_and_read_back(self):
        parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), os.urandom(MiB + 17)]
        upload_id = self.create("big/object", ContentType="application/x-thing",
                                Metadata={"kind": "multi"}, CacheControl="no-store")
        etags = []
        for number, body in enumerate(parts, 1):
            etag = self.upload("big/object", upload_id, number, body)
            self.assertEqual(etag, f'"{md5_hex(body)}"')
            etags.append((number, etag))
        # The upload is invisible until completed.
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="mpu", Key="big/object")
        self.assertEqual(self.s3.list_objects_v2(Bucket="mpu")["KeyCount"], 0)
        done = self.complete("big/object", upload_id, etags)
        self.assertEqual(done["ETag"], multipart_etag(parts))
        self.assertEqual((done["Bucket"], done["Key"]), ("mpu", "big/object"))
        self.assertTrue(done["Location"].endswith("/mpu/big/object"), done["Location"])

        whole = b"".join(parts)
        got = self.s3.get_object(Bucket="mpu", Key="big/object")
        self.assertEqual(got["ETag"], multipart_etag(parts))
        self.assertEqual(got["ContentLength"], len(whole))
        self.assertEqual((got["ContentType"], got["Metadata"], got["CacheControl"]),
                         ("application/x-thing", {"kind": "multi"}, "no-store"))
        self.assertTrue(got["Body"].read() == whole)
        # Ranges across part boundaries.
        first = 5 * MiB - 5
        got = self.s3.get_object(Bucket="mpu", Key="big/object",
                                 Range=f"bytes={first}-{first + 9}")
        self.assertEqual(got["Body"].read(), whole[first:first + 10])
        got = self.s3.get_object(Bucket="mpu", Key="big/object", Range="bytes=-20")
        self.assertEqual(got["Body"].read(), whole[-20:])
        listing = self.s3.list_objects_v2(Bucket="mpu")["Contents"]
        self.assertEqual([(o["Key"], o["Size"], o["ETag"]) for o in listing],
                         [("big/object", len(whole), multipart_etag(parts))])
        # Completed: the upload is gone.
        self.assertEqual(self.s3.list_multipart_uploads(Bucket="mpu").get("Uploads", []), [])
        self.assertS3Error("NoSuchUpload", 404, self.s3.list_parts, Bucket="mpu",
                           Key="big/object", UploadId=upload_id)
        # Completing it again is a retry: the same answer (RetriedCompletionTests).
        self.assertEqual(self.complete("big/object", upload_id, etags)["ETag"], done["ETag"])
        self.assertS3Error("NoSuchUpload", 404, self.s3.abort_multipart_upload,
                           Bucket="mpu", Key="big/object", UploadId=upload_id)

    def test_single_small_part_replaced_parts_and_subsets(self):
        upload_id = self.create("one")
        etag = self.upload("one", upload_id, 1, b"tiny")
        done = self.complete("one", upload_id, [(1, etag)])
        self.assertEqual(done["ETag"], multipart_etag([b"tiny"]))
        self.assertEqual(self.s3.get_object(Bucket="mpu", Key="one")["Body"].read(), b"tiny")

        # A part uploaded again replaces the earlier one; parts not named
        # in the completion are dropped; numbers may have gaps.
        a, b, c = os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"
        upload_id = self.create("gaps")
        self.upload("gaps", upload_id, 2, b"will be replaced")
        e2 = self.upload("gaps", upload_id, 2, a)
        e5 = self.upload("gaps", upload_id, 5, b)
        self.upload("gaps", upload_id, 7, b"dropped")
        e9 = self.upload("gaps", upload_id, 9, c)
        parts = self.s3.list_parts(Bucket="mpu", Key="gaps", UploadId=upload_id)["Parts"]
        self.assertEqual([(p["PartNumber"], p["Size"]) for p in parts],
                         [(2, len(a)), (5, len(b)), (7, 7), (9, 4)])
        done = self.complete("gaps", upload_id, [(2, e2), (5, e5), (9, e9)])
        self.assertEqual(done["ETag"], multipart_etag([a, b, c]))
        self.assertTrue(self.s3.get_object(Bucket="mpu", Key="gaps")["Body"].read()
                        == a + b + c)
        # ETags may be sent without quotes.
        upload_id = self.create("unquoted")
        etag = self.upload("unquoted", upload_id, 1, b"x")
        self.complete("unquoted", upload_id, [(1, etag.strip('"'))])
        self.assertEqual(self.s3.get_object(Bucket="mpu", Key="unquoted")["Body"].read(), b"x")

    def test_completion_errors(self):
        small, big = os.urandom(MiB), os.urandom(5 * MiB)
        upload_id = self.create("bad")
        e1 = self.upload("bad", upload_id, 1, small)
        e2 = self.upload("bad", upload_id, 2, big)
        e3 = self.upload("bad", upload_id, 3, b"last")

        self.assertS3Error("EntityTooSmall", 400, self.complete, "bad", upload_id,
                           [(1, e1), (2, e2), (3, e3)])
        self.assertS3Error("InvalidPart", 400, self.complete, "bad", upload_id,
                           [(2, e2), (4, e3)])
        self.assertS3Error("InvalidPart", 400, self.complete, "bad", upload_id,
                           [(2, e1), (3, e3)])
        self.assertS3Error("InvalidPartOrder", 400, self.complete, "bad", upload_id,
                           [(3, e3), (2, e2)])
        self.assertS3Error("InvalidPartOrder", 400, self.complete, "bad", upload_id,
                           [(2, e2), (2, e2)])
        self.assertS3Error("NoSuchUpload", 404, self.complete, "bad", "no-such-upload",
                           [(2, e2)])
        self.assertS3Error("NoSuchUpload", 404, self.complete, "other-key", upload_id,
                           [(2, e2)])
        # An empty part list is not a document S3 accepts.
        reply = s3http.request(self.node, "POST", f"/mpu/bad?uploadId={upload_id}",
                               body=b"<CompleteMultipartUpload></CompleteMultipartUpload>")
        self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="mpu", Key="bad")

        # Failed completions leave the upload intact: it still completes.
        parts = self.s3.list_parts(Bucket="mpu", Key="bad", UploadId=upload_id)["Parts"]
        self.assertEqual([p["PartNumber"] for p in parts], [1, 2, 3])
        done = self.complete("bad", upload_id, [(2, e2), (3, e3)])
        self.assertEqual(done["ETag"], multipart_etag([big, b"last"]))

        # Part numbers outside 1..10000, parts of uploads that do not exist.
        upload_id = self.create("numbers")
        for number in (0, 10001):
            self.assertS3Error("InvalidArgument", 400, self.upload, "numbers", upload_id,
                               number, b"x")
        self.upload("numbers", upload_id, 10000, b"x")
        self.assertS3Error("NoSuchUpload", 404, self.upload, "numbers", "nope", 1, b"x")
        self.assertS3Error("NoSuchUpload", 404, self.upload, "other", upload_id, 1, b"x")
        self.assertS3Error("NoSuchBucket", 404, self.s3.create_multipart_upload,
                           Bucket="nobucket", Key="x")
        # A part with a wrong Content-MD5 is refused and not stored.
        self.assertS3Error("BadDigest", 400, self.upload, "numbers", upload_id, 3, b"abc",
                           ContentMD5=md5_b64(b"abd"))
        parts = self.s3.list_parts(Bucket="mpu", Key="numbers", UploadId=upload_id)["Parts"]
        self.assertEqual([p["PartNumber"] for p in parts], [10000])

    def test_abort(self):
        upload_id = self.create("aborted")
        self.upload("aborted", upload_id, 1, os.urandom(5 * MiB))
        aborted = self.s3.abort_multipart_upload(Bucket="mpu", Key="aborted",
                                                 UploadId=upload_id)
        self.assertEqual(aborted["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertS3Error("NoSuchUpload", 404, self.upload, "aborted", upload_id, 2, b"x")
        self.assertS3Error("NoSuchUpload", 404, self.s3.list_parts, Bucket="mpu",
                           Key="aborted", UploadId=upload_id)
        self.assertS3Error("NoSuchUpload", 404, self.complete, "aborted", upload_id,
                           [(1, '"x"')])
        self.assertS3Error("NoSuchUpload", 404, self.s3.abort_multipart_upload,
                           Bucket="mpu", Key="aborted", UploadId=upload_id)
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="mpu", Key="aborted")
        self.assertEqual(self.s3.list_multipart_uploads(Bucket="mpu").get("Uploads", []), [])
        # Aborting one upload of a key leaves the key's others alone.
        keep, drop = self.create("k"), self.create("k")
        etag = self.upload("k", keep, 1, b"kept")
        self.upload("k", drop, 1, b"dropped")
        self.s3.abort_multipart_upload(Bucket="mpu", Key="k", UploadId=drop)
        self.complete("k", keep, [(1, etag)])
        self.assertEqual(self.s3.get_object(Bucket="mpu", Key="k")["Body"].read(), b"kept")

    def test_list_parts_and_uploads(self):
        upload_id = self.create("listed")
        bodies = {n: f"part {n}".encode() * n for n in range(1, 8)}
        for number, body in bodies.items():
            self.upload("listed", upload_id, number, body)
        response = self.s3.list_parts(Bucket="mpu", Key="listed", UploadId=upload_id)
        self.assertEqual([(p["PartNumber"], p["Size"], p["ETag"]) for p in response["Parts"]],
                         [(n, len(b), f'"{md5_hex(b)}"') for n, b in bodies.items()])
        self.assertFalse(response["IsTruncated"])
        self.assertEqual(response["UploadId"], upload_id)
        self.assertEqual(response["Owner"]["DisplayName"], "admin")
        self.assertEqual(response["Initiator"]["DisplayName"], "admin")
        # Paging parts.
        numbers, marker = [], 0
        while True:
            response = self.s3.list_parts(Bucket="mpu", Key="listed", UploadId=upload_id,
                                          MaxParts=3, PartNumberMarker=marker)
            numbers.append([p["PartNumber"] for p in response["Parts"]])
            if not response["IsTruncated"]:
                break
            marker = response["NextPartNumberMarker"]
        self.assertEqual(numbers, [[1, 2, 3], [4, 5, 6], [7]])

        # Uploads: several keys, two uploads of one key.
        ids = {"listed": [upload_id]}
        for key in ("a/1", "a/2", "b", "listed", "c/d/e"):
            ids.setdefault(key, []).append(self.create(key))
        response = self.s3.list_multipart_uploads(Bucket="mpu")
        got = [(u["Key"], u["UploadId"]) for u in response["Uploads"]]
        wanted = sorted((k, i) for k, v in ids.items() for i in v)
        self.assertEqual(got, wanted)
        self.assertEqual(response["Uploads"][0]["Initiator"]["DisplayName"], "admin")
        self.assertFalse(response["IsTruncated"])
        response = self.s3.list_multipart_uploads(Bucket="mpu", Prefix="a/")
        self.assertEqual([u["Key"] for u in response["Uploads"]], ["a/1", "a/2"])
        response = self.s3.list_multipart_uploads(Bucket="mpu", Delimiter="/")
        self.assertEqual([u["Key"] for u in response["Uploads"]], ["b", "listed", "listed"])
        self.assertEqual([p["Prefix"] for p in response["CommonPrefixes"]], ["a/", "c/"])
        # Paging uploads by key and upload id markers.
        seen, key_marker, id_marker = [], "", ""
        while True:
            response = self.s3.list_multipart_uploads(
                Bucket="mpu", MaxUploads=2, KeyMarker=key_marker, UploadIdMarker=id_marker)
            page = [(u["Key"], u["UploadId"]) for u in response.get("Uploads", [])]
            self.assertLessEqual(len(page), 2)
            seen += page
            if not response["IsTruncated"]:
                break
            key_marker = response["NextKeyMarker"]
            id_marker = response["NextUploadIdMarker"]
        self.assertEqual(seen, wanted)
        # A key marker alone skips every upload of that key.
        response = self.s3.list_multipart_uploads(Bucket="mpu", KeyMarker="b")
        self.assertEqual([u["Key"] for u in response["Uploads"]], ["c/d/e", "listed", "listed"])

    def test_upload_part_copy(self):
        source = os.urandom(6 * MiB + 100)
        self.s3.put_object(Bucket="mpu", Key="source", Body=source)
        self.s3.put_object(Bucket="mpu", Key="small source", Body=b"0123456789")
        upload_id = self.create("assembled")
        copied = self.s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=upload_id,
                                          PartNumber=1, CopySource="mpu/source",
                                          CopySourceRange=f"bytes=0-{5 * MiB}")
        first = source[:5 * MiB + 1]
        self.assertEqual(copied["CopyPartResult"]["ETag"], f'"{md5_hex(first)}"')
        copied = self.s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=upload_id,
                                          PartNumber=2,
                                          CopySource={"Bucket": "mpu", "Key": "small source"},
                                          CopySourceRange="bytes=2-5")
        self.assertEqual(copied["CopyPartResult"]["ETag"], f'"{md5_hex(b"2345")}"')
        copied = self.s3.upload_part_copy(Bucket="mpu", Key="assembled", UploadId=upload_id,
                                          PartNumber=3, CopySource="mpu/source")
        self.assertEqual(copied["CopyPartResult"]["ETag"], f'"{md5_hex(source)}"')
        parts = self.s3.list_parts(Bucket="mpu", Key="assembled", UploadId=upload_id)["Parts"]
        self.assertEqual([p["Size"] for p in parts], [len(first), 4, len(source)])
        self.assertS3Error("EntityTooSmall", 400, self.complete, "assembled", upload_id,
                           [(p["PartNumber"], p["ETag"]) for p in parts])
        done = self.complete("assembled", upload_id,
                             [(1, parts[0]["ETag"]), (3, parts[2]["ETag"])])
        self.assertEqual(done["ETag"], multipart_etag([first, source]))
        got = self.s3.get_object(Bucket="mpu", Key="assembled")["Body"].read()
        self.assertTrue(got == first + source)

        upload_id = self.create("more")
        self.assertS3Error("NoSuchKey", 404, self.s3.upload_part_copy, Bucket="mpu",
                           Key="more", UploadId=upload_id, PartNumber=1,
                           CopySource="mpu/missing")
        # A copy range names both ends within the source; nothing is clamped.
        for spec in ("bytes=5-", "bytes=-3", "bytes=6-2", "0-3", "bytes=0-1,3-4"):
            self.assertS3Error("InvalidArgument", 400, self.s3.upload_part_copy, Bucket="mpu",
                               Key="more", UploadId=upload_id, PartNumber=1,
                               CopySource="mpu/small source", CopySourceRange=spec)
        # One past the source's end is unsatisfiable: InvalidRange, as on S3.
        for spec in ("bytes=20-30", "bytes=0-10"):
            self.assertS3Error("InvalidRange", 416, self.s3.upload_part_copy, Bucket="mpu",
                               Key="more", UploadId=upload_id, PartNumber=1,
                               CopySource="mpu/small source", CopySourceRange=spec)
        self.assertEqual(self.s3.list_parts(Bucket="mpu", Key="more",
                                            UploadId=upload_id).get("Parts", []), [])
        copied = self.s3.upload_part_copy(Bucket="mpu", Key="more", UploadId=upload_id,
                                          PartNumber=1, CopySource="mpu/small source",
                                          CopySourceRange="bytes=0-9")
        self.assertEqual(copied["CopyPartResult"]["ETag"], f'"{md5_hex(b"0123456789")}"')
        self.assertS3Error("NoSuchUpload", 404, self.s3.upload_part_copy, Bucket="mpu",
                           Key="more", UploadId="nope", PartNumber=1,
                           CopySource="mpu/small source")

    def test_boto3_managed_transfer(self):
        data = os.urandom(17 * MiB + 5)
        config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                                max_concurrency=4)
        self.s3.upload_fileobj(io.BytesIO(data), "mpu", "managed", Config=config)
        head = self.s3.head_object(Bucket="mpu", Key="managed")
        parts = [data[i:i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
        self.assertEqual((head["ContentLength"], head["ETag"]),
                         (len(data), multipart_etag(parts)))
        out = io.BytesIO()
        self.s3.download_fileobj("mpu", "managed", out, Config=config)
        self.assertTrue(out.getvalue() == data)


class RetriedCompletionTests(S3Assertions, TestCase):
    """CompleteMultipartUpload is idempotent (issue 14 item 5): SDKs retry
    it after a timeout, and the retry of a completion that succeeded must
    not be told NoSuchUpload."""

    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="mpu")
        self.s3.put_bucket_versioning(Bucket="mpu",
                                      VersioningConfiguration={"Status": "Enabled"})

    def parts(self, key, upload_id, bodies):
        return {"Parts": [
            {"PartNumber": n, "ETag": self.s3.upload_part(
                Bucket="mpu", Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]}
            for n, body in enumerate(bodies, 1)]}

    def test_completing_again_answers_the_same(self):
        bodies = [os.urandom(5 * MiB), b"tail"]
        upload_id = self.s3.create_multipart_upload(Bucket="mpu", Key="k",
                                                    ChecksumAlgorithm="SHA256")["UploadId"]
        parts = self.parts("k", upload_id, bodies)
        first = self.s3.complete_multipart_upload(Bucket="mpu", Key="k", UploadId=upload_id,
                                                  MultipartUpload=parts)
        again = self.s3.complete_multipart_upload(Bucket="mpu", Key="k", UploadId=upload_id,
                                                  MultipartUpload=parts)
        for name in ("ETag", "VersionId", "ChecksumSHA256", "ChecksumType", "Bucket", "Key"):
            self.assertEqual(again[name], first[name], name)
        self.assertEqual(first["ETag"], multipart_etag(bodies))
        versions = self.s3.list_object_versions(Bucket="mpu")["Versions"]
        self.assertEqual([v["VersionId"] for v in versions], [first["VersionId"]])
        # Another part list is another completion: that upload is gone.
        self.assertS3Error("NoSuchUpload", 404, self.s3.complete_multipart_upload,
                           Bucket="mpu", Key="k", UploadId=upload_id,
                           MultipartUpload={"Parts": parts["Parts"][:1]})
        self.assertS3Error("NoSuchUpload", 404, self.s3.complete_multipart_upload,
                           Bucket="mpu", Key="other", UploadId=upload_id,
                           MultipartUpload=parts)
        # Once the version it made is deleted, there is nothing to answer with.
        self.s3.delete_object(Bucket="mpu", Key="k", VersionId=first["VersionId"])
        self.assertS3Error("NoSuchUpload", 404, self.s3.complete_multipart_upload,
                           Bucket="mpu", Key="k", UploadId=upload_id, MultipartUpload=parts)

    def test_a_part_sent_again_completes_with_its_latest_etag_and_checksum(self):
        upload_id = self.s3.create_multipart_upload(Bucket="mpu", Key="again",
                                                    ChecksumAlgorithm="SHA256")["UploadId"]
        first = self.s3.upload_part(Bucket="mpu", Key="again", UploadId=upload_id,
                                    PartNumber=1, Body=b"first", ChecksumAlgorithm="SHA256")
        second = self.s3.upload_part(Bucket="mpu", Key="again", UploadId=upload_id,
                                     PartNumber=1, Body=b"second")
        self.assertNotEqual(first["ChecksumSHA256"], second["ChecksumSHA256"])
        listed = self.s3.list_parts(Bucket="mpu", Key="again", UploadId=upload_id)["Parts"]
        self.assertEqual([(p["ETag"], p["ChecksumSHA256"]) for p in listed],
                         [(second["ETag"], second["ChecksumSHA256"])])
        done = self.s3.complete_multipart_upload(
            Bucket="mpu", Key="again", UploadId=upload_id, MultipartUpload={"Parts": [
                {"PartNumber": 1, "ETag": second["ETag"],
                 "ChecksumSHA256": second["ChecksumSHA256"]}]})
        self.assertEqual(done["ETag"], multipart_etag([b"second"]))
        self.assertEqual(self.s3.get_object(Bucket="mpu", Key="again")["Body"].read(),
                         b"second")

    def test_boto3_retries_a_completion_whose_answer_was_lost(self):
        """The first attempt completes on the node but its answer never
        reaches boto3 (a read timeout); boto3's own retry gets a 200."""
        access, secret = self.node.credentials()
        client = boto3.client("s3", endpoint_url=self.node.endpoint,
                              aws_access_key_id=access, aws_secret_access_key=secret,
                              region_name="us-east-1",
                              config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        upload_id = client.create_multipart_upload(Bucket="mpu", Key="lost")["UploadId"]
        parts = self.parts("lost", upload_id, [b"only part"])
        attempts = []

        def lose_the_first_answer(request, **_):
            attempts.append(request.url)
            if len(attempts) == 1:
                URLLib3Session().send(request).content
                raise ReadTimeoutError(endpoint_url=request.url)
            return None

        client.meta.events.register("before-send.s3.CompleteMultipartUpload",
                                    lose_the_first_answer)
        done = client.complete_multipart_upload(Bucket="mpu", Key="lost", UploadId=upload_id,
                                                MultipartUpload=parts)
        self.assertEqual(len(attempts), 2)
        self.assertEqual(done["ETag"], multipart_etag([b"only part"]))
        head = self.s3.head_object(Bucket="mpu", Key="lost")
        self.assertEqual((head["ETag"], head["VersionId"]), (done["ETag"], done["VersionId"]))
