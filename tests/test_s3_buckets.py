"""Bucket operations against a real node, through boto3 and raw HTTP:
ListBuckets, CreateBucket (naming rules, already owned / already exists),
DeleteBucket, HeadBucket and GetBucketLocation."""

import datetime
import json

from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions

# Names S3 refuses (and boto3 lets through its own check, or does not).
BAD_NAMES = [
    "ab",                      # too short
    "a" * 64,                  # too long
    "UpperCase",               # upper case
    "under_score",             # underscore
    "-leading-dash",
    "trailing-dash-",
    ".leading-dot",
    "trailing-dot.",
    "two..dots",
    "dash-.dot",
    "dot.-dash",
    "192.168.5.4",             # shaped like an IP address
    "xn--reserved-prefix",
    "sthree-reserved",
    "name-s3alias",
    "name--ol-s3",
]
# Names it accepts, at the edges of the rules.
GOOD_NAMES = ["abc", "a" * 63, "0-9", "my.dotted.name", "a-b-c.d1", "1.2.3"]


class BucketTests(S3Assertions, TestCase):
    def test_create_list_head_location_delete(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        listing = s3.list_buckets()
        self.assertEqual(listing["Buckets"], [])
        self.assertEqual(listing["Owner"]["DisplayName"], "admin")
        self.assertEqual(len(listing["Owner"]["ID"]), 64)

        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
        created = s3.create_bucket(Bucket="beta.example")
        self.assertEqual(created["ResponseMetadata"]["HTTPStatusCode"], 200)
        self.assertEqual(created["Location"], "/beta.example")
        s3.create_bucket(Bucket="alpha")
        listing = s3.list_buckets()
        self.assertEqual([b["Name"] for b in listing["Buckets"]], ["alpha", "beta.example"])
        for bucket in listing["Buckets"]:
            self.assertGreaterEqual(bucket["CreationDate"], before)
            self.assertLessEqual(bucket["CreationDate"],
                                 datetime.datetime.now(datetime.timezone.utc))

        head = s3.head_bucket(Bucket="alpha")
        self.assertEqual(head["ResponseMetadata"]["HTTPStatusCode"], 200)
        self.assertEqual(head["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"],
                         "us-east-1")
        self.assertS3Error("404", 404, s3.head_bucket, Bucket="missing")
        self.assertIsNone(s3.get_bucket_location(Bucket="alpha")["LocationConstraint"])
        self.assertS3Error("NoSuchBucket", 404, s3.get_bucket_location, Bucket="missing")

        self.assertS3Error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="alpha")
        self.assertS3Error("NoSuchBucket", 404, s3.delete_bucket, Bucket="missing")

        s3.put_object(Bucket="alpha", Key="k", Body=b"x")
        self.assertS3Error("BucketNotEmpty", 409, s3.delete_bucket, Bucket="alpha")
        self.assertEqual(s3.get_object(Bucket="alpha", Key="k")["Body"].read(), b"x")
        s3.delete_object(Bucket="alpha", Key="k")
        deleted = s3.delete_bucket(Bucket="alpha")
        self.assertEqual(deleted["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertS3Error("404", 404, s3.head_bucket, Bucket="alpha")
        self.assertS3Error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="alpha")
        self.assertS3Error("NoSuchBucket", 404, s3.put_object, Bucket="alpha", Key="k",
                           Body=b"y")
        self.assertEqual([b["Name"] for b in s3.list_buckets()["Buckets"]], ["beta.example"])

        # A bucket made again under a deleted one's name starts empty.
        s3.create_bucket(Bucket="alpha")
        self.assertEqual(s3.list_objects_v2(Bucket="alpha")["KeyCount"], 0)
        self.assertS3Error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="k")

        # A bucket with an open multipart upload but no object may be deleted.
        s3.create_multipart_upload(Bucket="alpha", Key="pending")
        s3.delete_bucket(Bucket="alpha")
        s3.create_bucket(Bucket="alpha")
        self.assertEqual(s3.list_multipart_uploads(Bucket="alpha").get("Uploads", []), [])

        # The state survives a restart of the node.
        node.stop()
        node.start()
        s3 = node.client()
        self.assertEqual([b["Name"] for b in s3.list_buckets()["Buckets"]],
                         ["alpha", "beta.example"])

    def test_bucket_naming_rules(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        for name in BAD_NAMES:
            reply = s3http.request(node, "PUT", s3http.key_path(name))
            document = self.assertErrorReply(reply, "InvalidBucketName", 400)
            self.assertEqual(document["Resource"], f"/{name}")
        # Characters boto3 refuses to send at all.
        for name in ("bad!name", "has space", "star*"):
            reply = s3http.request(node, "PUT", s3http.key_path(name))
            self.assertErrorReply(reply, "InvalidBucketName", 400)
        self.assertEqual(s3.list_buckets()["Buckets"], [])
        for name in GOOD_NAMES:
            s3.create_bucket(Bucket=name)
        self.assertEqual(sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
                         sorted(GOOD_NAMES))
        # boto3's own check passes these, the node must refuse them.
        self.assertS3Error("InvalidBucketName", 400, s3.create_bucket, Bucket="UpperCase")
        self.assertS3Error("InvalidBucketName", 400, s3.create_bucket, Bucket="under_score")

    def test_create_bucket_configuration(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="configured",
                         CreateBucketConfiguration={"LocationConstraint": "us-east-1"})
        s3.head_bucket(Bucket="configured")
        reply = s3http.request(node, "PUT", "/broken-config", body=b"<CreateBucketConfig")
        self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertS3Error("404", 404, s3.head_bucket, Bucket="broken-config")

    def test_buckets_of_other_accounts(self):
        node = NodeProcess(self).start()
        admin = node.client()
        code, out, err = node.z4("--json", "key", "create", "alice")
        self.assertEqual(code, 0, err)
        alice_key = json.loads(out)
        alice = node.client((alice_key["access_key_id"], alice_key["secret_access_key"]))

        admin.create_bucket(Bucket="admins")
        alice.create_bucket(Bucket="alices")
        # The name is taken by another account.
        self.assertS3Error("BucketAlreadyExists", 409, alice.create_bucket, Bucket="admins")
        self.assertS3Error("BucketAlreadyExists", 409, admin.create_bucket, Bucket="alices")
        self.assertS3Error("BucketAlreadyOwnedByYou", 409, alice.create_bucket,
                           Bucket="alices")

        # Each account lists what it may see, under its own owner.
        listing = alice.list_buckets()
        self.assertEqual([b["Name"] for b in listing["Buckets"]], ["alices"])
        self.assertEqual(listing["Owner"], {"ID": alice_key["user_id"],
                                            "DisplayName": "alice"})
        self.assertEqual([b["Name"] for b in admin.list_buckets()["Buckets"]],
                         ["admins", "alices"])
        self.assertS3Error("403", 403, alice.head_bucket, Bucket="admins")
        self.assertS3Error("AccessDenied", 403, alice.delete_bucket, Bucket="admins")
        self.assertS3Error("AccessDenied", 403, alice.get_bucket_location, Bucket="admins")

        alice.delete_bucket(Bucket="alices")
        self.assertEqual(alice.list_buckets()["Buckets"], [])
        # Once deleted, the name is free for anyone.
        admin.create_bucket(Bucket="alices")
        self.assertS3Error("BucketAlreadyExists", 409, alice.create_bucket, Bucket="alices")
        # ...and alice's rights went with her bucket.
        self.assertS3Error("403", 403, alice.head_bucket, Bucket="alices")
        self.assertEqual(alice.list_buckets()["Buckets"], [])
