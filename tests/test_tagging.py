"""Object and bucket tagging through boto3 and the aws CLI against a real
node, with S3's limits and errors."""

import json

from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess


def tag_set(tags):
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def as_dict(response):
    return {t["Key"]: t["Value"] for t in response["TagSet"]}


class TaggingTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="tags")

    def error(self, call, **kwargs):
        with self.assertRaises(ClientError) as raised:
            call(**kwargs)
        return raised.exception.response["Error"]

    def test_put_get_delete_object_tags(self):
        s3 = self.s3
        s3.put_object(Bucket="tags", Key="k", Body=b"x")
        self.assertEqual(s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"], [])
        self.assertNotIn("TagCount", s3.head_object(Bucket="tags", Key="k"))
        tags = {"project": "z4", "owner": "ops team", "path": "a/b=c+d@e:f"}
        s3.put_object_tagging(Bucket="tags", Key="k", Tagging=tag_set(tags))
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="k")), tags)
        self.assertEqual(s3.get_object(Bucket="tags", Key="k")["TagCount"], 3)
        self.assertEqual(s3.head_object(Bucket="tags", Key="k")["TagCount"], 3)
        s3.delete_object_tagging(Bucket="tags", Key="k")
        self.assertEqual(s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"], [])
        self.assertEqual(self.error(s3.get_object_tagging, Bucket="tags", Key="nope")["Code"],
                         "NoSuchKey")

    def test_tags_on_each_version(self):
        s3 = self.s3
        s3.put_bucket_versioning(Bucket="tags", VersioningConfiguration={"Status": "Enabled"})
        old = s3.put_object(Bucket="tags", Key="k", Body=b"1", Tagging="v=1")["VersionId"]
        new = s3.put_object(Bucket="tags", Key="k", Body=b"2", Tagging="v=2")["VersionId"]
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="k")), {"v": "2"})
        got = s3.get_object_tagging(Bucket="tags", Key="k", VersionId=old)
        self.assertEqual((as_dict(got), got["VersionId"]), ({"v": "1"}, old))
        put = s3.put_object_tagging(Bucket="tags", Key="k", VersionId=old,
                                    Tagging=tag_set({"v": "one"}))
        self.assertEqual(put["VersionId"], old)
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="k", VersionId=old)),
                         {"v": "one"})
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="k", VersionId=new)),
                         {"v": "2"})
        s3.delete_object_tagging(Bucket="tags", Key="k", VersionId=new)
        self.assertEqual(s3.get_object_tagging(Bucket="tags", Key="k")["TagSet"], [])

    def test_aws_limits(self):
        s3 = self.s3
        s3.put_object(Bucket="tags", Key="k", Body=b"x")

        def put(tags):
            return self.error(s3.put_object_tagging, Bucket="tags", Key="k",
                              Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags]})
        eleven = [(f"k{i}", "v") for i in range(11)]
        self.assertEqual(put(eleven)["Code"], "BadRequest")
        self.assertEqual(put([("k", "a"), ("k", "b")])["Code"], "InvalidTag")
        self.assertEqual(put([("k" * 129, "v")])["Code"], "InvalidTag")
        self.assertEqual(put([("k", "v" * 257)])["Code"], "InvalidTag")
        self.assertEqual(put([("aws:thing", "v")])["Code"], "InvalidTag")
        self.assertEqual(put([("bad#key", "v")])["Code"], "InvalidTag")
        # The limits themselves are allowed.
        s3.put_object_tagging(Bucket="tags", Key="k", Tagging=tag_set(
            {f"k{i}" + "x" * 120: "v" * 256 for i in range(10)}))
        self.assertEqual(s3.head_object(Bucket="tags", Key="k")["TagCount"], 10)
        error = self.error(s3.put_object, Bucket="tags", Key="h", Body=b"x",
                           Tagging="&".join(f"k{i}=v" for i in range(11)))
        self.assertEqual(error["Code"], "BadRequest")
        error = self.error(s3.put_object, Bucket="tags", Key="h", Body=b"x", Tagging="a=1&a=2")
        self.assertEqual(error["Code"], "InvalidArgument")

    def test_tagging_header_on_put_copy_and_multipart(self):
        s3 = self.s3
        s3.put_object(Bucket="tags", Key="src", Body=b"x", Tagging="a=1&b=two%20words")
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="src")),
                         {"a": "1", "b": "two words"})
        s3.copy_object(Bucket="tags", Key="copied", CopySource="tags/src")
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="copied")),
                         {"a": "1", "b": "two words"})
        s3.copy_object(Bucket="tags", Key="replaced", CopySource="tags/src",
                       TaggingDirective="REPLACE", Tagging="c=3")
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="replaced")),
                         {"c": "3"})
        s3.copy_object(Bucket="tags", Key="untagged", CopySource="tags/src",
                       TaggingDirective="REPLACE")
        self.assertEqual(s3.get_object_tagging(Bucket="tags", Key="untagged")["TagSet"], [])
        # Replacing only the tags of an object onto itself is a change.
        s3.copy_object(Bucket="tags", Key="src", CopySource="tags/src",
                       TaggingDirective="REPLACE", Tagging="d=4")
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="src")), {"d": "4"})
        upload = s3.create_multipart_upload(Bucket="tags", Key="mp", Tagging="m=p")["UploadId"]
        etag = s3.upload_part(Bucket="tags", Key="mp", UploadId=upload, PartNumber=1,
                              Body=b"x")["ETag"]
        s3.complete_multipart_upload(Bucket="tags", Key="mp", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": etag}]})
        self.assertEqual(as_dict(s3.get_object_tagging(Bucket="tags", Key="mp")), {"m": "p"})

    def test_bucket_tags(self):
        s3 = self.s3
        error = self.error(s3.get_bucket_tagging, Bucket="tags")
        self.assertEqual(error["Code"], "NoSuchTagSet")
        tags = {f"t{i}": str(i) for i in range(50)}
        s3.put_bucket_tagging(Bucket="tags", Tagging=tag_set(tags))
        self.assertEqual(as_dict(s3.get_bucket_tagging(Bucket="tags")), tags)
        tags["t50"] = "too many"
        self.assertEqual(self.error(s3.put_bucket_tagging, Bucket="tags",
                                    Tagging=tag_set(tags))["Code"], "InvalidTag")
        s3.delete_bucket_tagging(Bucket="tags")
        self.assertEqual(self.error(s3.get_bucket_tagging, Bucket="tags")["Code"],
                         "NoSuchTagSet")

    def test_aws_cli(self):
        node = self.node
        node.aws("s3api", "put-object", "--bucket", "tags", "--key", "f", "--tagging", "x=1")
        node.aws("s3api", "put-object-tagging", "--bucket", "tags", "--key", "f", "--tagging",
                 '{"TagSet": [{"Key": "team", "Value": "storage"}]}')
        out = json.loads(node.aws("s3api", "get-object-tagging", "--bucket", "tags",
                                  "--key", "f").stdout)
        self.assertEqual(out["TagSet"], [{"Key": "team", "Value": "storage"}])
        node.aws("s3api", "put-bucket-tagging", "--bucket", "tags", "--tagging",
                 "TagSet=[{Key=cost,Value=lab}]")
        out = json.loads(node.aws("s3api", "get-bucket-tagging", "--bucket", "tags").stdout)
        self.assertEqual(out["TagSet"], [{"Key": "cost", "Value": "lab"}])
