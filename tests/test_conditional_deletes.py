"""Conditional deletes and completes (issue 14 item 4), through boto3
against a real node: If-Match, x-amz-if-match-last-modified-time and
x-amz-if-match-size on DeleteObject (current and by version), the per-key
ETag, LastModifiedTime and Size of DeleteObjects with per-key errors, and
If-Match / If-None-Match: * on CompleteMultipartUpload."""

import datetime

from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions


class ConditionalDeleteTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="plain")
        self.s3.create_bucket(Bucket="versioned")
        self.s3.put_bucket_versioning(Bucket="versioned",
                                      VersioningConfiguration={"Status": "Enabled"})

    def exists(self, bucket, key, **kwargs):
        try:
            self.s3.head_object(Bucket=bucket, Key=key, **kwargs)
            return True
        except ClientError:
            return False

    def test_if_match_on_delete_object(self):
        s3 = self.s3
        for bucket in ("plain", "versioned"):
            etag = s3.put_object(Bucket=bucket, Key="k", Body=b"data")["ETag"]
            self.assertS3Error("PreconditionFailed", 412, s3.delete_object, Bucket=bucket,
                               Key="k", IfMatch='"00000000000000000000000000000000"')
            self.assertTrue(self.exists(bucket, "k"))
            s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag)
            self.assertFalse(self.exists(bucket, "k"))
            # If-Match on a key that is not there (or whose current version
            # is a delete marker) is NoSuchKey, also with *.
            self.assertS3Error("NoSuchKey", 404, s3.delete_object, Bucket=bucket, Key="k",
                               IfMatch="*")
            self.assertS3Error("NoSuchKey", 404, s3.delete_object, Bucket=bucket, Key="k",
                               IfMatch=etag)
            s3.put_object(Bucket=bucket, Key="k", Body=b"again")
            s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
            self.assertFalse(self.exists(bucket, "k"))

    def test_if_match_on_delete_by_version(self):
        s3 = self.s3
        first = s3.put_object(Bucket="versioned", Key="k", Body=b"one")
        second = s3.put_object(Bucket="versioned", Key="k", Body=b"two")
        # The condition is checked against the version named.
        self.assertS3Error("PreconditionFailed", 412, s3.delete_object, Bucket="versioned",
                           Key="k", VersionId=first["VersionId"], IfMatch=second["ETag"])
        s3.delete_object(Bucket="versioned", Key="k", VersionId=first["VersionId"],
                         IfMatch=first["ETag"])
        self.assertFalse(self.exists("versioned", "k", VersionId=first["VersionId"]))
        self.assertTrue(self.exists("versioned", "k", VersionId=second["VersionId"]))

    def test_last_modified_time_and_size(self):
        s3 = self.s3
        s3.put_object(Bucket="plain", Key="k", Body=b"12345")
        modified = s3.head_object(Bucket="plain", Key="k")["LastModified"]
        earlier = modified - datetime.timedelta(seconds=10)
        self.assertS3Error("PreconditionFailed", 412, s3.delete_object, Bucket="plain",
                           Key="k", IfMatchLastModifiedTime=earlier)
        self.assertS3Error("PreconditionFailed", 412, s3.delete_object, Bucket="plain",
                           Key="k", IfMatchSize=4)
        self.assertS3Error("PreconditionFailed", 412, s3.delete_object, Bucket="plain",
                           Key="k", IfMatchSize=5, IfMatchLastModifiedTime=earlier)
        self.assertTrue(self.exists("plain", "k"))
        s3.delete_object(Bucket="plain", Key="k", IfMatchSize=5,
                         IfMatchLastModifiedTime=modified)
        self.assertFalse(self.exists("plain", "k"))
        # Without If-Match, a key that is not there is deleted as usual.
        s3.delete_object(Bucket="plain", Key="k", IfMatchSize=5)
        reply = s3http.request(self.node, "DELETE", "/plain/k",
                               {"x-amz-if-match-size": "five"})
        self.assertErrorReply(reply, "InvalidArgument", 400)
        reply = s3http.request(self.node, "DELETE", "/plain/k",
                               {"x-amz-if-match-last-modified-time": "yesterday"})
        self.assertErrorReply(reply, "InvalidArgument", 400)

    def test_delete_objects_per_key_conditions(self):
        s3 = self.s3
        etags = {key: s3.put_object(Bucket="versioned", Key=key, Body=key.encode())["ETag"]
                 for key in ("a", "b", "c", "d", "e")}
        modified = s3.head_object(Bucket="versioned", Key="d")["LastModified"]
        result = s3.delete_objects(Bucket="versioned", Delete={"Objects": [
            {"Key": "a", "ETag": etags["a"]},
            {"Key": "b", "ETag": etags["a"]},
            {"Key": "c", "Size": 99},
            {"Key": "d", "Size": 1, "LastModifiedTime": modified},
            {"Key": "e", "ETag": "*"},
            {"Key": "missing", "ETag": etags["a"]},
        ]})
        deleted = sorted(d["Key"] for d in result["Deleted"])
        errors = {e["Key"]: e["Code"] for e in result["Errors"]}
        self.assertEqual(deleted, ["a", "d", "e"])
        self.assertEqual(errors, {"b": "PreconditionFailed", "c": "PreconditionFailed",
                                  "missing": "NoSuchKey"})
        self.assertTrue(self.exists("versioned", "b"))
        self.assertTrue(self.exists("versioned", "c"))
        self.assertFalse(self.exists("versioned", "a"))


class ConditionalCompleteTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="mpu")

    def upload(self, key, body):
        upload = self.s3.create_multipart_upload(Bucket="mpu", Key=key)["UploadId"]
        etag = self.s3.upload_part(Bucket="mpu", Key=key, UploadId=upload, PartNumber=1,
                                   Body=body)["ETag"]
        return upload, {"Parts": [{"PartNumber": 1, "ETag": etag}]}

    def test_if_match_and_if_none_match_on_complete(self):
        s3 = self.s3
        # If-None-Match: * creates only.
        upload, parts = self.upload("k", b"first")
        first = s3.complete_multipart_upload(Bucket="mpu", Key="k", UploadId=upload,
                                             MultipartUpload=parts, IfNoneMatch="*")
        # Its retry repeats the completion that created the object.
        again = s3.complete_multipart_upload(Bucket="mpu", Key="k", UploadId=upload,
                                             MultipartUpload=parts, IfNoneMatch="*")
        self.assertEqual(again["ETag"], first["ETag"])
        upload, parts = self.upload("k", b"second")
        error = self.assertRaises(ClientError, s3.complete_multipart_upload, Bucket="mpu",
                                  Key="k", UploadId=upload, MultipartUpload=parts,
                                  IfNoneMatch="*")
        self.assertEqual(error.response["Error"]["Code"], "PreconditionFailed")
        # If-Match replaces only the version it names; the upload survives
        # a failed condition and completes with the right one.
        current = s3.head_object(Bucket="mpu", Key="k")["ETag"]
        error = self.assertRaises(ClientError, s3.complete_multipart_upload, Bucket="mpu",
                                  Key="k", UploadId=upload, MultipartUpload=parts,
                                  IfMatch='"00000000000000000000000000000000"')
        self.assertEqual(error.response["Error"]["Code"], "PreconditionFailed")
        s3.complete_multipart_upload(Bucket="mpu", Key="k", UploadId=upload,
                                     MultipartUpload=parts, IfMatch=current)
        self.assertEqual(s3.get_object(Bucket="mpu", Key="k")["Body"].read(), b"second")
        # If-Match on a key that is not there is NoSuchKey.
        upload, parts = self.upload("absent", b"x")
        error = self.assertRaises(ClientError, s3.complete_multipart_upload, Bucket="mpu",
                                  Key="absent", UploadId=upload, MultipartUpload=parts,
                                  IfMatch=current)
        self.assertEqual(error.response["Error"]["Code"], "NoSuchKey")
