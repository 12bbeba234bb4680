"""Access control end to end: a real node, boto3 with several keys and
unsigned (anonymous) clients, plain HTTP, the aws CLI and ``z4 key info``.
Bucket policies, ACLs and object ownership, over every operation."""

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request

from botocore import UNSIGNED
from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
ANONYMOUS_ID = "65a011a29cdf8ec533ec3d1ccaae921c"


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


class AccessTestCase(TestCase):
    # twistd z4node options of the node under test.
    node_args = ()

    def setUp(self):
        self.node = NodeProcess(self, args=self.node_args).start()
        self.admin = self.node.client()
        self.anonymous = self.node.client(signature_version=UNSIGNED)

    def z4(self, *args):
        code, out, err = self.node.z4(*args)
        self.assertEqual(code, 0, f"z4 {' '.join(args)} failed: {err}")
        return out

    def new_key(self, name):
        """A new key: (its JSON from z4, a boto3 client using it)."""
        key = json.loads(self.z4("--json", "key", "create", name))
        return key, self.node.client((key["access_key_id"], key["secret_access_key"]))

    def assertS3Error(self, code, status, call, *args, **kwargs):
        error = self.assertRaises(ClientError, call, *args, **kwargs)
        self.assertEqual((error.response["Error"]["Code"],
                          error.response["ResponseMetadata"]["HTTPStatusCode"]),
                         (code, status), error.response)
        return error.response["Error"]

    def http(self, method, path, body=None, headers=None):
        """An unsigned request by urllib: (status, body)."""
        request = urllib.request.Request(self.node.endpoint + path, data=body,
                                         method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def grants(self, acl):
        """An ACL response's grants as (grantee, permission) pairs."""
        out = set()
        for grant in acl["Grants"]:
            grantee = grant["Grantee"]
            out.add((grantee.get("ID") or grantee.get("URI"), grant["Permission"]))
        return out


class BucketPolicyTests(AccessTestCase):
    def test_put_get_delete_status_and_validation(self):
        owner, owner_s3 = self.new_key("owner")
        reader, reader_s3 = self.new_key("reader")
        owner_s3.create_bucket(Bucket="pol")
        self.z4("bucket", "allow", "pol", "--key", "reader", "--read")
        self.assertS3Error("NoSuchBucketPolicy", 404, owner_s3.get_bucket_policy, Bucket="pol")
        self.assertS3Error("NoSuchBucketPolicy", 404, owner_s3.get_bucket_policy_status,
                           Bucket="pol")
        owner_s3.delete_bucket_policy(Bucket="pol")

        text = policy({"Sid": "Public", "Effect": "Allow", "Principal": "*",
                       "Action": "s3:GetObject", "Resource": "arn:aws:s3:::pol/public/*"})
        owner_s3.put_bucket_policy(Bucket="pol", Policy=text)
        self.assertEqual(owner_s3.get_bucket_policy(Bucket="pol")["Policy"], text)
        self.assertIs(owner_s3.get_bucket_policy_status(
            Bucket="pol")["PolicyStatus"]["IsPublic"], True)
        # Only what owns the bucket manages its policy.
        for call in (reader_s3.get_bucket_policy, reader_s3.delete_bucket_policy,
                     reader_s3.get_bucket_policy_status):
            self.assertS3Error("AccessDenied", 403, call, Bucket="pol")
        self.assertS3Error("AccessDenied", 403, reader_s3.put_bucket_policy, Bucket="pol",
                           Policy=text)
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_bucket_policy, Bucket="pol")
        self.assertS3Error("NoSuchBucket", 404, self.admin.get_bucket_policy, Bucket="nope")

        for bad, reason in (
                ("{nope", "This policy contains invalid Json"),
                ("[1]", "first byte must be '{'"),
                (policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                         "Resource": "arn:aws:s3:::other/*"}), "Policy has invalid resource"),
                (policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/nobody"},
                         "Action": "s3:GetObject", "Resource": "arn:aws:s3:::pol/*"}),
                 "Invalid principal in policy"),
                (policy({"Effect": "Allow", "Principal": "*", "Action": "s3:Fly",
                         "Resource": "arn:aws:s3:::pol/*"}), "Policy has invalid action"),
                (policy({"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
                         "Resource": "arn:aws:s3:::pol/*"}),
                 "Action does not apply to any resource(s) in statement"),
                (policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                         "Resource": "arn:aws:s3:::pol/*",
                         "Condition": {"StringEquals": {"s3:color": "blue"}}}),
                 "Policy has an invalid condition key"),
                (json.dumps({"Version": "2012-10-17"}), "Missing required field Statement")):
            error = self.assertS3Error("MalformedPolicy", 400, owner_s3.put_bucket_policy,
                                       Bucket="pol", Policy=bad)
            self.assertIn(reason, error["Message"])
        self.assertEqual(owner_s3.get_bucket_policy(Bucket="pol")["Policy"], text)

        # Principals by access key id, user id or ARN; not public.
        text = policy({"Effect": "Allow", "Action": "s3:GetObject",
                       "Resource": "arn:aws:s3:::pol/*",
                       "Principal": {"AWS": [reader["access_key_id"], reader["user_id"],
                                             "arn:aws:iam::123456789012:user/reader"]}})
        owner_s3.put_bucket_policy(Bucket="pol", Policy=text)
        self.assertIs(owner_s3.get_bucket_policy_status(
            Bucket="pol")["PolicyStatus"]["IsPublic"], False)

        # Kept across a restart.
        self.node.stop()
        self.node.start()
        self.assertEqual(owner_s3.get_bucket_policy(Bucket="pol")["Policy"], text)
        owner_s3.delete_bucket_policy(Bucket="pol")
        self.assertS3Error("NoSuchBucketPolicy", 404, owner_s3.get_bucket_policy, Bucket="pol")

    def test_anonymous_reads_where_a_policy_allows(self):
        self.admin.create_bucket(Bucket="site")
        for key in ("public/index.html", "private/secret.txt"):
            self.admin.put_object(Bucket="site", Key=key, Body=key.encode())
        self.admin.put_bucket_policy(Bucket="site", Policy=policy(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::site/public/*"}))

        got = self.anonymous.get_object(Bucket="site", Key="public/index.html")
        self.assertEqual(got["Body"].read(), b"public/index.html")
        self.anonymous.head_object(Bucket="site", Key="public/index.html")
        self.assertEqual(self.http("GET", "/site/public/index.html"),
                         (200, b"public/index.html"))
        status, body = self.http("GET", "/site/private/secret.txt")
        self.assertEqual(status, 403)
        self.assertIn(b"<Code>AccessDenied</Code>", body)
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="site",
                           Key="private/secret.txt")
        self.assertS3Error("403", 403, self.anonymous.head_object, Bucket="site",
                           Key="private/secret.txt")
        # A missing key stays hidden from a requester that may not list.
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="site",
                           Key="public/missing.html")
        for call, kwargs in ((self.anonymous.list_objects_v2, {}),
                             (self.anonymous.put_object, {"Key": "public/x", "Body": b"x"}),
                             (self.anonymous.delete_object, {"Key": "public/index.html"})):
            self.assertS3Error("AccessDenied", 403, call, Bucket="site", **kwargs)
        self.assertS3Error("AccessDenied", 403, self.anonymous.list_buckets)

        self.admin.put_bucket_policy(Bucket="site", Policy=policy(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::site/public/*"},
            {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::site"}))
        self.assertS3Error("NoSuchKey", 404, self.anonymous.get_object, Bucket="site",
                           Key="public/missing.html")
        self.assertEqual(self.anonymous.list_objects_v2(Bucket="site")["KeyCount"], 2)
        status, body = self.http("GET", "/site?list-type=2&prefix=public/")
        self.assertEqual(status, 200)
        self.assertIn(b"<Key>public/index.html</Key>", body)

    def test_presigned_urls_die_with_their_key(self):
        self.admin.create_bucket(Bucket="share")
        self.admin.put_object(Bucket="share", Key="k", Body=b"v")
        reader, reader_s3 = self.new_key("reader")
        self.z4("bucket", "allow", "share", "--key", "reader", "--read")
        reader_v4 = self.node.client((reader["access_key_id"], reader["secret_access_key"]),
                                     signature_version="s3v4")
        urls = [client.generate_presigned_url("get_object",
                                              Params={"Bucket": "share", "Key": "k"})
                for client in (reader_s3, reader_v4)]
        for url in urls:
            with urllib.request.urlopen(url, timeout=30) as response:
                self.assertEqual(response.read(), b"v")
        self.z4("key", "delete", "reader")
        for url in urls:
            error = self.assertRaises(urllib.error.HTTPError, urllib.request.urlopen, url,
                                      timeout=30)
            self.assertEqual(error.code, 403)
            self.assertIn(b"<Code>AccessDenied</Code>", error.read())

    def test_keys_conditions_and_explicit_denies(self):
        alice, alice_s3 = self.new_key("alice")
        bob, bob_s3 = self.new_key("bob")
        writer, writer_s3 = self.new_key("writer")
        self.admin.create_bucket(Bucket="team")
        self.z4("bucket", "allow", "team", "--key", "writer", "--write")
        self.admin.put_object(Bucket="team", Key="other", Body=b"other")
        self.admin.put_bucket_policy(Bucket="team", Policy=policy(
            {"Sid": "AliceHome", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": "arn:aws:s3:::team/home/${aws:username}/*"},
            {"Sid": "AliceListsHome", "Effect": "Allow",
             "Principal": {"AWS": alice["access_key_id"]}, "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::team",
             "Condition": {"StringLike": {"s3:prefix": "home/alice/*"}}},
            {"Sid": "BobFromTenNet", "Effect": "Allow", "Principal": {"AWS": bob["user_id"]},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::team/*",
             "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}},
            {"Sid": "BobFromLoopback", "Effect": "Allow", "Principal": {"AWS": bob["user_id"]},
             "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::team",
             "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
            {"Sid": "Locked", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::team/locked/*"},
            {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": "arn:aws:s3:::team/tls/*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "NoSecretTags", "Effect": "Deny", "Principal": "*",
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::team/*",
             "Condition": {"ForAnyValue:StringEquals": {"s3:RequestObjectTagKeys": "secret"}}},
            {"Sid": "DropboxNeedsOwnerControl", "Effect": "Deny", "Principal": "*",
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::team/dropbox/*",
             "Condition": {"StringNotEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}}))

        alice_s3.put_object(Bucket="team", Key="home/alice/notes", Body=b"mine")
        self.assertEqual(alice_s3.get_object(Bucket="team", Key="home/alice/notes")["Body"].read(),
                         b"mine")
        self.assertS3Error("AccessDenied", 403, alice_s3.put_object, Bucket="team",
                           Key="home/bob/notes", Body=b"x")
        self.assertS3Error("AccessDenied", 403, alice_s3.get_object, Bucket="team", Key="other")
        listing = alice_s3.list_objects_v2(Bucket="team", Prefix="home/alice/")
        self.assertEqual([o["Key"] for o in listing["Contents"]], ["home/alice/notes"])
        self.assertS3Error("AccessDenied", 403, alice_s3.list_objects_v2, Bucket="team")
        self.assertS3Error("AccessDenied", 403, alice_s3.list_objects_v2, Bucket="team",
                           Prefix="home/bob/")
        # Copies need read on the source and write on the target.
        alice_s3.copy_object(Bucket="team", Key="home/alice/copy",
                             CopySource="team/home/alice/notes")
        self.assertS3Error("AccessDenied", 403, alice_s3.copy_object, Bucket="team",
                           Key="home/alice/stolen", CopySource="team/other")
        self.assertS3Error("AccessDenied", 403, alice_s3.copy_object, Bucket="team",
                           Key="elsewhere", CopySource="team/home/alice/notes")
        # DeleteObjects answers each key on its own.
        self.admin.put_object(Bucket="team", Key="home/bob/notes", Body=b"bob's")
        result = alice_s3.delete_objects(Bucket="team", Delete={"Objects": [
            {"Key": "home/alice/copy"}, {"Key": "home/bob/notes"}]})
        self.assertEqual([d["Key"] for d in result["Deleted"]], ["home/alice/copy"])
        self.assertEqual([(e["Key"], e["Code"]) for e in result["Errors"]],
                         [("home/bob/notes", "AccessDenied")])
        self.assertEqual(self.admin.get_object(Bucket="team", Key="home/bob/notes")["Body"]
                         .read(), b"bob's")
        self.assertS3Error("AccessDenied", 403, bob_s3.delete_objects, Bucket="team",
                           Delete={"Objects": [{"Key": "other"}]})

        # Conditions on the client's address: we come from 127.0.0.1.
        self.assertS3Error("AccessDenied", 403, bob_s3.get_object, Bucket="team", Key="other")
        self.assertEqual(bob_s3.list_objects_v2(Bucket="team")["KeyCount"], 3)

        # Explicit denies bind grants and the admin key alike.
        writer_s3.put_object(Bucket="team", Key="free/x", Body=b"x")
        self.assertS3Error("AccessDenied", 403, writer_s3.put_object, Bucket="team",
                           Key="locked/x", Body=b"x")
        self.assertS3Error("AccessDenied", 403, self.admin.put_object, Bucket="team",
                           Key="locked/x", Body=b"x")
        self.assertS3Error("AccessDenied", 403, self.admin.put_object, Bucket="team",
                           Key="tls/x", Body=b"x")
        self.assertS3Error("AccessDenied", 403, writer_s3.put_object, Bucket="team",
                           Key="free/tagged", Body=b"x", Tagging="team=blue&secret=1")
        writer_s3.put_object(Bucket="team", Key="free/tagged", Body=b"x", Tagging="team=blue")
        self.assertS3Error("AccessDenied", 403, writer_s3.put_object, Bucket="team",
                           Key="dropbox/x", Body=b"x")
        writer_s3.put_object(Bucket="team", Key="dropbox/x", Body=b"x",
                             ACL="bucket-owner-full-control")
        # ...but the admin key can always repair the policy.
        self.admin.put_bucket_policy(Bucket="team", Policy=policy(
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": ["arn:aws:s3:::team", "arn:aws:s3:::team/*"]}))
        self.assertS3Error("AccessDenied", 403, self.admin.list_objects_v2, Bucket="team")
        self.admin.get_bucket_policy(Bucket="team")
        self.admin.delete_bucket_policy(Bucket="team")
        self.admin.list_objects_v2(Bucket="team")

    def test_deletes_that_compare_an_etag_also_need_get_object(self):
        """As on S3: a delete with If-Match naming an ETag (or a DeleteObjects
        entry with an ETag) needs s3:GetObject beside s3:DeleteObject, and
        deleting a version by id is s3:DeleteObjectVersion in DeleteObjects
        as it is in DeleteObject."""
        carol, carol_s3 = self.new_key("carol")
        self.admin.create_bucket(Bucket="del")
        self.admin.put_bucket_versioning(Bucket="del",
                                         VersioningConfiguration={"Status": "Enabled"})
        etags = {key: self.admin.put_object(Bucket="del", Key=key, Body=key.encode())["ETag"]
                 for key in ("a", "b", "c", "d")}
        pinned = self.admin.put_object(Bucket="del", Key="v", Body=b"v")["VersionId"]
        self.admin.put_bucket_policy(Bucket="del", Policy=policy(
            {"Effect": "Allow", "Principal": {"AWS": carol["user_id"]},
             "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
             "Resource": "arn:aws:s3:::del/*"},
            {"Effect": "Deny", "Principal": {"AWS": carol["user_id"]},
             "Action": "s3:DeleteObjectVersion", "Resource": "arn:aws:s3:::del/v"}))

        self.assertS3Error("AccessDenied", 403, carol_s3.delete_object, Bucket="del", Key="a",
                           IfMatch=etags["a"])
        carol_s3.delete_object(Bucket="del", Key="a", IfMatch="*")
        result = carol_s3.delete_objects(Bucket="del", Delete={"Objects": [
            {"Key": "b", "ETag": etags["b"]}, {"Key": "c"},
            {"Key": "v", "VersionId": pinned}]})
        self.assertEqual(sorted((e["Key"], e["Code"]) for e in result["Errors"]),
                         [("b", "AccessDenied"), ("v", "AccessDenied")])
        self.assertEqual([d["Key"] for d in result["Deleted"]], ["c"])
        self.admin.head_object(Bucket="del", Key="v", VersionId=pinned)

        self.admin.put_bucket_policy(Bucket="del", Policy=policy(
            {"Effect": "Allow", "Principal": {"AWS": carol["user_id"]},
             "Action": ["s3:DeleteObject", "s3:GetObject"],
             "Resource": "arn:aws:s3:::del/*"}))
        carol_s3.delete_object(Bucket="del", Key="b", IfMatch=etags["b"])
        result = carol_s3.delete_objects(Bucket="del", Delete={"Objects": [
            {"Key": "d", "ETag": etags["d"]}]})
        self.assertEqual([d["Key"] for d in result["Deleted"]], ["d"])

    def test_key_info_shows_what_a_key_may_do(self):
        alice, _ = self.new_key("alice")
        self.new_key("nobody")
        self.admin.create_bucket(Bucket="granted")
        self.admin.create_bucket(Bucket="shared")
        self.z4("bucket", "allow", "granted", "--key", "alice", "--read")
        self.admin.put_bucket_policy(Bucket="shared", Policy=policy(
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared/*"},
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam:::user/alice"},
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::shared/in/*"}))
        info = json.loads(self.z4("--json", "key", "info", "alice"))
        may = {entry["bucket"]: entry for entry in info["may"]}
        self.assertEqual(set(may), {"granted", "shared"})
        self.assertIn("s3:GetObject", may["granted"]["always"])
        self.assertIn("s3:ListBucket", may["granted"]["always"])
        self.assertNotIn("s3:PutObject", may["granted"]["always"])
        self.assertEqual(may["granted"]["via"], ["read grant"])
        self.assertEqual(may["shared"]["always"], ["s3:GetObject"])
        self.assertEqual(may["shared"]["sometimes"], ["s3:PutObject"])
        text = self.z4("key", "info", "alice")
        self.assertIn("shared (by bucket policy statement #1, bucket policy statement #2)", text)
        self.assertIn("depending on the request (conditions, keys): s3:PutObject", text)
        self.assertIn("No bucket access through grants",
                      self.z4("key", "info", "nobody"))
        self.assertIn("everything (admin key)", self.z4("key", "info", "admin"))

        # z4 bucket list says which buckets have a policy and which are public.
        self.admin.create_bucket(Bucket="open", ObjectOwnership="ObjectWriter",
                                 ACL="public-read")
        listed = {b["name"]: (b["policy"], b["public"])
                  for b in json.loads(self.z4("--json", "bucket", "list"))}
        self.assertEqual(listed, {"granted": (False, False), "shared": (True, False),
                                  "open": (False, True)})
        lines = self.z4("bucket", "list").splitlines()
        self.assertEqual(lines[0].split()[-2:], ["POLICY", "PUBLIC"])
        self.assertTrue(lines[2].startswith("open ") and lines[2].endswith("yes"), lines)


class EveryOperationTests(AccessTestCase):
    """Each operation of the S3 core, anonymously and by a key without a
    grant: refused with AccessDenied without a policy, carried out with
    one that allows it."""

    def prepare(self, bucket):
        self.admin.create_bucket(Bucket=bucket)
        self.admin.put_object(Bucket=bucket, Key="existing", Body=b"data")
        upload = self.admin.create_multipart_upload(Bucket=bucket, Key="mp-admin")["UploadId"]
        return upload

    def denied_everywhere(self, client, bucket, upload, anonymous):
        part = {"Bucket": bucket, "Key": "mp-admin", "UploadId": upload}
        calls = [
            (client.head_bucket, {"Bucket": bucket}),
            (client.get_bucket_location, {"Bucket": bucket}),
            (client.get_bucket_versioning, {"Bucket": bucket}),
            (client.list_objects, {"Bucket": bucket}),
            (client.list_objects_v2, {"Bucket": bucket}),
            (client.get_object, {"Bucket": bucket, "Key": "existing"}),
            (client.head_object, {"Bucket": bucket, "Key": "existing"}),
            (client.put_object, {"Bucket": bucket, "Key": "new", "Body": b"x"}),
            (client.copy_object, {"Bucket": bucket, "Key": "copy",
                                  "CopySource": f"{bucket}/existing"}),
            (client.delete_object, {"Bucket": bucket, "Key": "existing"}),
            (client.delete_objects, {"Bucket": bucket,
                                     "Delete": {"Objects": [{"Key": "existing"}]}}),
            (client.create_multipart_upload, {"Bucket": bucket, "Key": "mp"}),
            (client.upload_part, dict(part, PartNumber=1, Body=b"part")),
            (client.upload_part_copy, dict(part, PartNumber=2,
                                           CopySource=f"{bucket}/existing")),
            (client.list_parts, part),
            (client.complete_multipart_upload, dict(part, MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": '"x"'}]})),
            (client.abort_multipart_upload, part),
            (client.list_multipart_uploads, {"Bucket": bucket}),
            (client.delete_bucket, {"Bucket": bucket}),
            (client.get_bucket_acl, {"Bucket": bucket}),
            (client.put_bucket_acl, {"Bucket": bucket, "ACL": "private"}),
            (client.get_object_acl, {"Bucket": bucket, "Key": "existing"}),
            (client.put_object_acl, {"Bucket": bucket, "Key": "existing", "ACL": "private"}),
            (client.get_bucket_ownership_controls, {"Bucket": bucket}),
            (client.delete_bucket_ownership_controls, {"Bucket": bucket}),
            (client.get_bucket_policy, {"Bucket": bucket}),
            (client.get_bucket_policy_status, {"Bucket": bucket}),
            (client.delete_bucket_policy, {"Bucket": bucket}),
        ]
        for call, kwargs in calls:
            if call.__name__.startswith("head_"):
                self.assertS3Error("403", 403, call, **kwargs)
            else:
                self.assertS3Error("AccessDenied", 403, call, **kwargs)
        if anonymous:
            self.assertS3Error("AccessDenied", 403, client.list_buckets)
            self.assertS3Error("AccessDenied", 403, client.create_bucket, Bucket="mine")
        else:
            self.assertEqual(client.list_buckets()["Buckets"], [])
        self.assertEqual(self.admin.get_object(Bucket=bucket, Key="existing")["Body"].read(),
                         b"data")

    def allowed_everywhere(self, client, bucket, owner_id):
        client.head_bucket(Bucket=bucket)
        client.get_bucket_location(Bucket=bucket)
        client.get_bucket_versioning(Bucket=bucket)
        self.assertEqual(client.list_objects(Bucket=bucket)["Contents"][0]["Key"], "existing")
        self.assertEqual(client.list_objects_v2(Bucket=bucket)["KeyCount"], 1)
        self.assertEqual(client.get_object(Bucket=bucket, Key="existing")["Body"].read(),
                         b"data")
        self.assertEqual(client.head_object(Bucket=bucket, Key="existing")["ContentLength"], 4)
        client.put_object(Bucket=bucket, Key="new", Body=b"x")
        client.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/existing")
        client.delete_object(Bucket=bucket, Key="new")
        deleted = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}]})
        self.assertEqual([d["Key"] for d in deleted["Deleted"]], ["copy"])
        upload = client.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        etag = client.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                                  Body=b"part")["ETag"]
        parts = client.list_parts(Bucket=bucket, Key="mp", UploadId=upload)
        self.assertEqual(parts["Parts"][0]["ETag"], etag)
        self.assertEqual(parts["Initiator"]["ID"], owner_id)
        uploads = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
        self.assertEqual({u["Key"] for u in uploads}, {"mp", "mp-admin"})
        client.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                         MultipartUpload={"Parts": [
                                             {"PartNumber": 1, "ETag": etag}]})
        self.assertEqual(client.get_object(Bucket=bucket, Key="mp")["Body"].read(), b"part")
        other = client.create_multipart_upload(Bucket=bucket, Key="mp2")["UploadId"]
        client.upload_part_copy(Bucket=bucket, Key="mp2", UploadId=other, PartNumber=1,
                                CopySource=f"{bucket}/existing")
        client.abort_multipart_upload(Bucket=bucket, Key="mp2", UploadId=other)
        listing = self.admin.list_objects_v2(Bucket=bucket, FetchOwner=True)
        owners = {o["Key"]: o["Owner"]["ID"] for o in listing["Contents"]}
        self.assertEqual(owners["mp"], owner_id)
        self.admin.abort_multipart_upload(Bucket=bucket, Key="mp-admin",
                                          UploadId=uploads[0]["UploadId"]
                                          if uploads[0]["Key"] == "mp-admin"
                                          else uploads[1]["UploadId"])
        for key in ("mp", "existing"):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)
        self.assertEqual([b["Name"] for b in self.admin.list_buckets()["Buckets"]
                          if b["Name"] == bucket], [])

    def open_policy(self, bucket, principal):
        return policy({"Effect": "Allow", "Principal": principal, "Action": "s3:*",
                       "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]})

    def test_anonymous(self):
        upload = self.prepare("anon")
        self.denied_everywhere(self.anonymous, "anon", upload, anonymous=True)
        self.admin.put_bucket_policy(Bucket="anon", Policy=self.open_policy("anon", "*"))
        self.allowed_everywhere(self.anonymous, "anon", ANONYMOUS_ID)

    def test_a_key_without_grants(self):
        stranger, stranger_s3 = self.new_key("stranger")
        upload = self.prepare("guarded")
        self.denied_everywhere(stranger_s3, "guarded", upload, anonymous=False)
        self.admin.put_bucket_policy(Bucket="guarded", Policy=self.open_policy(
            "guarded", {"AWS": "arn:aws:iam:::user/stranger"}))
        self.allowed_everywhere(stranger_s3, "guarded", stranger["user_id"])


class EnforcedOwnershipTests(AccessTestCase):
    """A node run with --object-ownership BucketOwnerEnforced: ACLs are off
    in new buckets, as on AWS."""

    node_args = ("--object-ownership", "BucketOwnerEnforced")

    def test_acls_are_off_in_new_buckets(self):
        admin_id = self.admin.list_buckets()["Owner"]["ID"]
        self.admin.create_bucket(Bucket="plain")
        controls = self.admin.get_bucket_ownership_controls(Bucket="plain")
        self.assertEqual(controls["OwnershipControls"]["Rules"],
                         [{"ObjectOwnership": "BucketOwnerEnforced"}])
        for acl in ("private", "bucket-owner-full-control"):
            self.admin.put_object(Bucket="plain", Key=acl, Body=b"x", ACL=acl)
        self.admin.put_object(Bucket="plain", Key="granted", Body=b"x",
                              GrantFullControl=f'id="{admin_id}"')
        for call, kwargs in (
                (self.admin.put_object, {"Key": "k", "Body": b"x", "ACL": "public-read"}),
                (self.admin.put_object, {"Key": "k", "Body": b"x",
                                         "GrantRead": f'uri="{ALL_USERS}"'}),
                (self.admin.put_object_acl, {"Key": "private", "ACL": "public-read"}),
                (self.admin.put_bucket_acl, {"ACL": "public-read"}),
                (self.admin.copy_object, {"Key": "c", "CopySource": "plain/private",
                                          "ACL": "authenticated-read"}),
                (self.admin.create_multipart_upload, {"Key": "m", "ACL": "public-read"})):
            error = self.assertS3Error("AccessControlListNotSupported", 400, call,
                                       Bucket="plain", **kwargs)
            self.assertEqual(error["Message"], "The bucket does not allow ACLs")
        self.admin.put_object_acl(Bucket="plain", Key="private", ACL="private")
        self.admin.put_bucket_acl(Bucket="plain", ACL="private")
        for acl in (self.admin.get_bucket_acl(Bucket="plain"),
                    self.admin.get_object_acl(Bucket="plain", Key="private")):
            self.assertEqual(acl["Owner"]["ID"], admin_id)
            self.assertEqual(self.grants(acl), {(admin_id, "FULL_CONTROL")})
        self.assertS3Error("InvalidBucketAclWithObjectOwnership", 400, self.admin.create_bucket,
                           Bucket="loud", ACL="public-read")
        self.admin.create_bucket(Bucket="quiet", ACL="private")
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="plain",
                           Key="private")
        # A bucket may still ask for ACLs at creation.
        self.admin.create_bucket(Bucket="open", ObjectOwnership="ObjectWriter",
                                 ACL="public-read")
        self.admin.put_object(Bucket="open", Key="k", Body=b"open", ACL="public-read")
        self.assertEqual(self.http("GET", "/open/k"), (200, b"open"))
        # The bucket owner owns what others write, and listings say so.
        writer, writer_s3 = self.new_key("writer")
        self.z4("bucket", "allow", "plain", "--key", "writer", "--write")
        writer_s3.put_object(Bucket="plain", Key="by-writer", Body=b"w")
        listing = {o["Key"]: o["Owner"]["ID"]
                   for o in self.admin.list_objects(Bucket="plain")["Contents"]}
        self.assertEqual(listing["by-writer"], admin_id)
        acl = self.admin.get_object_acl(Bucket="plain", Key="by-writer")
        self.assertEqual(acl["Owner"]["ID"], admin_id)


class AclTests(AccessTestCase):
    def test_acls_are_on_by_default(self):
        """The node's default ownership is ObjectWriter: `aws s3 cp --acl
        public-read` publishes a file, and the writer owns it."""
        admin_id = self.admin.list_buckets()["Owner"]["ID"]
        self.node.aws("s3api", "create-bucket", "--bucket", "site")
        controls = self.admin.get_bucket_ownership_controls(Bucket="site")
        self.assertEqual(controls["OwnershipControls"]["Rules"],
                         [{"ObjectOwnership": "ObjectWriter"}])
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        source = os.path.join(workdir, "index.html")
        with open(source, "wb") as f:
            f.write(b"<h1>hello</h1>")
        self.node.aws("s3", "cp", source, "s3://site/index.html", "--acl", "public-read")
        self.assertEqual(self.http("GET", "/site/index.html"), (200, b"<h1>hello</h1>"))
        self.node.aws("s3", "cp", source, "s3://site/private.html")
        self.assertEqual(self.http("GET", "/site/private.html")[0], 403)
        # A public bucket ACL at creation, as s3cmd and scripts send it.
        self.admin.create_bucket(Bucket="public", ACL="public-read")
        self.assertIn((ALL_USERS, "READ"),
                      self.grants(self.admin.get_bucket_acl(Bucket="public")))
        # The writer owns what it writes.
        writer, writer_s3 = self.new_key("writer")
        self.z4("bucket", "allow", "site", "--key", "writer", "--write")
        writer_s3.put_object(Bucket="site", Key="by-writer", Body=b"w")
        listing = {o["Key"]: o["Owner"]["ID"]
                   for o in self.admin.list_objects(Bucket="site")["Contents"]}
        self.assertEqual(listing, {"index.html": admin_id, "private.html": admin_id,
                                   "by-writer": writer["user_id"]})
        self.assertEqual(self.admin.get_object_acl(Bucket="site", Key="by-writer")["Owner"]["ID"],
                         writer["user_id"])
        # Switched to BucketOwnerEnforced, the bucket owner owns it all.
        self.admin.put_bucket_ownership_controls(
            Bucket="site", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        listing = {o["Key"]: o["Owner"]["ID"]
                   for o in self.admin.list_objects(Bucket="site")["Contents"]}
        self.assertEqual(set(listing.values()), {admin_id})
        self.assertS3Error("InvalidArgument", 400, self.admin.create_bucket, Bucket="bad",
                           ObjectOwnership="Nobody")

    def test_acls_when_the_bucket_enables_them(self):
        alice, alice_s3 = self.new_key("alice")
        bob, bob_s3 = self.new_key("bob")
        admin_id = self.admin.list_buckets()["Owner"]["ID"]
        self.admin.create_bucket(Bucket="acl", ObjectOwnership="ObjectWriter", ACL="public-read")
        self.assertIn((ALL_USERS, "READ"), self.grants(self.admin.get_bucket_acl(Bucket="acl")))
        self.admin.put_object(Bucket="acl", Key="closed", Body=b"closed")
        self.admin.put_object(Bucket="acl", Key="open", Body=b"open", ACL="public-read")
        # The bucket ACL lets anyone list; the object ACLs say who reads.
        self.assertEqual(self.anonymous.list_objects_v2(Bucket="acl")["KeyCount"], 2)
        self.assertEqual(self.http("GET", "/acl/open"), (200, b"open"))
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="acl",
                           Key="closed")
        self.assertEqual(self.grants(self.admin.get_object_acl(Bucket="acl", Key="open")),
                         {(admin_id, "FULL_CONTROL"), (ALL_USERS, "READ")})
        self.admin.put_object_acl(Bucket="acl", Key="open", ACL="private")
        self.assertEqual(self.http("GET", "/acl/open")[0], 403)
        # Grants by canonical id, by group, in XML.
        self.admin.put_object_acl(Bucket="acl", Key="closed", AccessControlPolicy={
            "Owner": {"ID": admin_id},
            "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": admin_id},
                        "Permission": "FULL_CONTROL"},
                       {"Grantee": {"Type": "CanonicalUser", "ID": alice["user_id"]},
                        "Permission": "READ"}]})
        self.assertEqual(alice_s3.get_object(Bucket="acl", Key="closed")["Body"].read(),
                         b"closed")
        self.assertS3Error("AccessDenied", 403, bob_s3.get_object, Bucket="acl", Key="closed")
        self.assertS3Error("AccessDenied", 403, alice_s3.get_object_acl, Bucket="acl",
                           Key="closed")
        acl = self.admin.get_object_acl(Bucket="acl", Key="closed")
        alice_grant = [g for g in acl["Grants"] if g["Grantee"].get("ID") == alice["user_id"]]
        self.assertEqual(alice_grant[0]["Grantee"]["DisplayName"], "alice")
        self.assertEqual(alice_grant[0]["Grantee"]["Type"], "CanonicalUser")
        self.admin.put_object(Bucket="acl", Key="members", Body=b"members",
                              GrantRead=f'uri="{AUTHENTICATED_USERS}"',
                              GrantReadACP=f'id="{bob["user_id"]}"')
        self.assertEqual(bob_s3.get_object(Bucket="acl", Key="members")["Body"].read(),
                         b"members")
        self.assertIn((AUTHENTICATED_USERS, "READ"),
                      self.grants(bob_s3.get_object_acl(Bucket="acl", Key="members")))
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="acl",
                           Key="members")
        # Malformed grants.
        for kwargs, code in (
                ({"GrantRead": 'emailAddress="x@example.com"'}, "UnresolvableGrantByEmailAddress"),
                ({"GrantRead": 'id="0123"'}, "InvalidArgument"),
                ({"GrantRead": 'uri="http://example.com/group"'}, "InvalidArgument"),
                ({"ACL": "public-read", "GrantRead": f'uri="{ALL_USERS}"'}, "InvalidRequest"),
                ({"ACL": "world-readable"}, "InvalidArgument")):
            self.assertS3Error(code, 400, self.admin.put_object, Bucket="acl", Key="bad",
                               Body=b"x", **kwargs)
        self.assertS3Error("MalformedACLError", 400, self.admin.put_bucket_acl, Bucket="acl",
                           AccessControlPolicy={"Owner": {"ID": admin_id}, "Grants": [
                               {"Grantee": {"Type": "Group", "URI": ALL_USERS},
                                "Permission": "EVERYTHING"}]})

        # A public-read-write bucket takes anonymous uploads, owned by anonymous.
        self.admin.put_bucket_acl(Bucket="acl", AccessControlPolicy={
            "Owner": {"ID": admin_id},
            "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": admin_id},
                        "Permission": "FULL_CONTROL"},
                       {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "WRITE"},
                       {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]})
        self.anonymous.put_object(Bucket="acl", Key="dropped", Body=b"anonymous bytes")
        self.assertEqual(self.admin.get_object(Bucket="acl", Key="dropped")["Body"].read(),
                         b"anonymous bytes")
        # Its ACL names the anonymous owner, which no request can prove to be.
        self.assertEqual(self.admin.get_object_acl(Bucket="acl", Key="dropped")["Owner"]["ID"],
                         ANONYMOUS_ID)
        self.assertS3Error("AccessDenied", 403, self.anonymous.get_object, Bucket="acl",
                           Key="dropped")
        listing = self.admin.list_objects(Bucket="acl")["Contents"]
        self.assertEqual({o["Key"]: o["Owner"]["ID"] for o in listing}["dropped"], ANONYMOUS_ID)

        # Back to enforced ownership: refused while the bucket ACL is public.
        self.assertS3Error("InvalidBucketAclWithObjectOwnership", 400,
                           self.admin.put_bucket_ownership_controls, Bucket="acl",
                           OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        self.admin.put_bucket_acl(Bucket="acl", ACL="private")
        self.admin.put_bucket_ownership_controls(
            Bucket="acl", OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
        self.assertS3Error("AccessDenied", 403, bob_s3.get_object, Bucket="acl", Key="members")
        self.assertEqual(self.grants(self.admin.get_object_acl(Bucket="acl", Key="members")),
                         {(admin_id, "FULL_CONTROL")})
        self.admin.delete_bucket_ownership_controls(Bucket="acl")
        self.assertS3Error("OwnershipControlsNotFoundError", 404,
                           self.admin.get_bucket_ownership_controls, Bucket="acl")
        # Without controls ACLs count again, as under ObjectWriter.
        self.assertEqual(bob_s3.get_object(Bucket="acl", Key="members")["Body"].read(),
                         b"members")

    def test_bucket_owner_preferred_copies_and_multipart(self):
        owner, owner_s3 = self.new_key("owner")
        writer, writer_s3 = self.new_key("writer")
        owner_s3.create_bucket(Bucket="pref", ObjectOwnership="BucketOwnerPreferred")
        self.z4("bucket", "allow", "pref", "--key", "writer", "--write")
        writer_s3.put_object(Bucket="pref", Key="given", Body=b"given",
                             ACL="bucket-owner-full-control")
        writer_s3.put_object(Bucket="pref", Key="kept", Body=b"kept")
        acl = owner_s3.get_object_acl(Bucket="pref", Key="given")
        self.assertEqual(acl["Owner"]["ID"], owner["user_id"])
        acl = owner_s3.get_object_acl(Bucket="pref", Key="kept")
        self.assertEqual(acl["Owner"]["ID"], writer["user_id"])
        # Listings report the same owners.
        listing = {o["Key"]: o["Owner"]["ID"]
                   for o in owner_s3.list_objects_v2(Bucket="pref", FetchOwner=True)["Contents"]}
        self.assertEqual(listing, {"given": owner["user_id"], "kept": writer["user_id"]})
        versions = {v["Key"]: v["Owner"]["ID"]
                    for v in owner_s3.list_object_versions(Bucket="pref")["Versions"]}
        self.assertEqual(versions, listing)
        # The writer has no read grant: it reads what it owns, by its ACL.
        self.assertEqual(writer_s3.get_object(Bucket="pref", Key="kept")["Body"].read(), b"kept")
        self.assertS3Error("AccessDenied", 403, writer_s3.get_object, Bucket="pref",
                           Key="given")
        writer_s3.put_object_acl(Bucket="pref", Key="kept", ACL="public-read")
        self.assertEqual(self.http("GET", "/pref/kept"), (200, b"kept"))
        self.assertS3Error("AccessDenied", 403, writer_s3.put_object_acl, Bucket="pref",
                           Key="given", ACL="public-read")

        # A copy gets the ACL asked for, never its source's.
        owner_s3.copy_object(Bucket="pref", Key="copy", CopySource="pref/kept")
        self.assertEqual(self.http("GET", "/pref/copy")[0], 403)
        owner_s3.copy_object(Bucket="pref", Key="public-copy", CopySource="pref/given",
                             ACL="public-read")
        self.assertEqual(self.http("GET", "/pref/public-copy"), (200, b"given"))
        upload = owner_s3.create_multipart_upload(Bucket="pref", Key="mp",
                                                  ACL="public-read")["UploadId"]
        etag = owner_s3.upload_part(Bucket="pref", Key="mp", UploadId=upload, PartNumber=1,
                                    Body=b"multi")["ETag"]
        owner_s3.complete_multipart_upload(Bucket="pref", Key="mp", UploadId=upload,
                                           MultipartUpload={"Parts": [
                                               {"PartNumber": 1, "ETag": etag}]})
        self.assertEqual(self.http("GET", "/pref/mp"), (200, b"multi"))

    def test_the_documented_aws_cli_examples(self):
        """The commands docs/security.md shows, as written there."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        self.node.aws("s3api", "create-bucket", "--bucket", "photos")
        document = os.path.join(workdir, "policy.json")
        with open(document, "w") as f:
            f.write(policy({"Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": "arn:aws:s3:::photos/public/*"}))
        self.node.aws("s3api", "put-bucket-policy", "--bucket", "photos",
                      "--policy", f"file://{document}")
        got = json.loads(self.node.aws("s3api", "get-bucket-policy", "--bucket", "photos").stdout)
        self.assertEqual(json.loads(got["Policy"])["Statement"][0]["Sid"], "PublicRead")
        status = json.loads(self.node.aws("s3api", "get-bucket-policy-status",
                                          "--bucket", "photos").stdout)
        self.assertIs(status["PolicyStatus"]["IsPublic"], True)
        source = os.path.join(workdir, "cat.jpg")
        with open(source, "wb") as f:
            f.write(b"meow")
        self.node.aws("s3", "cp", source, "s3://photos/public/cat.jpg")
        self.assertEqual(self.http("GET", "/photos/public/cat.jpg"), (200, b"meow"))
        self.node.aws("s3api", "delete-bucket-policy", "--bucket", "photos")
        self.assertEqual(self.http("GET", "/photos/public/cat.jpg")[0], 403)

        self.node.aws("s3api", "put-bucket-ownership-controls", "--bucket", "photos",
                      "--ownership-controls", "Rules=[{ObjectOwnership=BucketOwnerPreferred}]")
        self.node.aws("s3api", "put-object-acl", "--bucket", "photos", "--key",
                      "public/cat.jpg", "--acl", "public-read")
        acl = json.loads(self.node.aws("s3api", "get-object-acl", "--bucket", "photos",
                                       "--key", "public/cat.jpg").stdout)
        self.assertIn((ALL_USERS, "READ"), self.grants(acl))
        self.assertEqual(self.http("GET", "/photos/public/cat.jpg"), (200, b"meow"))
        self.node.aws("s3", "cp", source, "s3://photos/shared.jpg", "--acl", "public-read")
        self.assertEqual(self.http("GET", "/photos/shared.jpg"), (200, b"meow"))
        self.node.aws("s3api", "create-bucket", "--bucket", "shared", "--object-ownership",
                      "ObjectWriter", "--acl", "public-read")
        status, body = self.http("GET", "/shared")
        self.assertEqual(status, 200)
        self.assertIn(b"<ListBucketResult", body)


class PublicAccessBlockTests(AccessTestCase):
    """Block Public Access: the configuration's API and what each flag does,
    through boto3 against a real node."""

    ALL = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
           "RestrictPublicBuckets": True}

    def block(self, bucket, **flags):
        self.admin.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=flags)

    def public_policy(self, bucket):
        return policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{bucket}/*"})

    def test_put_get_delete(self):
        owner, owner_s3 = self.new_key("owner")
        other, other_s3 = self.new_key("other")
        owner_s3.create_bucket(Bucket="pab")
        error = self.assertS3Error("NoSuchPublicAccessBlockConfiguration", 404,
                                   owner_s3.get_public_access_block, Bucket="pab")
        self.assertEqual(error["BucketName"], "pab")
        # S3 answers a bucket without a policy so, whatever blocks it.
        self.assertS3Error("NoSuchBucketPolicy", 404, owner_s3.get_bucket_policy_status,
                           Bucket="pab")
        owner_s3.put_public_access_block(Bucket="pab", PublicAccessBlockConfiguration=self.ALL)
        self.assertEqual(owner_s3.get_public_access_block(Bucket="pab")[
            "PublicAccessBlockConfiguration"], self.ALL)
        # Flags left out are false.
        owner_s3.put_public_access_block(Bucket="pab", PublicAccessBlockConfiguration={
            "IgnorePublicAcls": True})
        self.assertEqual(owner_s3.get_public_access_block(Bucket="pab")[
            "PublicAccessBlockConfiguration"], dict(
                {flag: False for flag in self.ALL}, IgnorePublicAcls=True))
        # Only the bucket's owner may read or change it.
        for call in (other_s3.get_public_access_block, other_s3.delete_public_access_block):
            self.assertS3Error("AccessDenied", 403, call, Bucket="pab")
        owner_s3.delete_public_access_block(Bucket="pab")
        self.assertS3Error("NoSuchPublicAccessBlockConfiguration", 404,
                           owner_s3.get_public_access_block, Bucket="pab")
        owner_s3.delete_public_access_block(Bucket="pab")
        self.assertS3Error("NoSuchBucket", 404, self.admin.get_public_access_block,
                           Bucket="missing")
        body = (b'<PublicAccessBlockConfiguration><BlockPublicAcls>yes</BlockPublicAcls>'
                b'</PublicAccessBlockConfiguration>')
        reply = s3http.request(self.node, "PUT", "/pab?publicAccessBlock", body=body, headers={
            "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
        self.assertEqual((reply.status, reply.error()["Code"]), (400, "MalformedXML"))

    def test_block_public_acls_refuses_public_acls(self):
        self.admin.create_bucket(Bucket="acls", ObjectOwnership="ObjectWriter")
        self.block("acls", BlockPublicAcls=True)
        for acl in ("public-read", "public-read-write", "authenticated-read"):
            error = self.assertS3Error("AccessDenied", 403, self.admin.put_object,
                                       Bucket="acls", Key="k", Body=b"x", ACL=acl)
            self.assertIn("BlockPublicAcls", error["Message"])
        self.assertS3Error("AccessDenied", 403, self.admin.put_object, Bucket="acls",
                           Key="k", Body=b"x", GrantRead=f'uri="{ALL_USERS}"')
        self.assertS3Error("AccessDenied", 403, self.admin.create_multipart_upload,
                           Bucket="acls", Key="k", ACL="public-read")
        self.admin.put_object(Bucket="acls", Key="k", Body=b"x", ACL="private")
        self.assertS3Error("AccessDenied", 403, self.admin.copy_object, Bucket="acls",
                           Key="copy", CopySource="acls/k", ACL="public-read")
        self.assertS3Error("AccessDenied", 403, self.admin.put_object_acl, Bucket="acls",
                           Key="k", ACL="public-read")
        self.assertS3Error("AccessDenied", 403, self.admin.put_bucket_acl, Bucket="acls",
                           ACL="public-read")
        owner = self.admin.get_bucket_acl(Bucket="acls")["Owner"]
        document = {"Owner": owner, "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"]},
             "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": AUTHENTICATED_USERS},
             "Permission": "READ"}]}
        self.assertS3Error("AccessDenied", 403, self.admin.put_bucket_acl, Bucket="acls",
                           AccessControlPolicy=document)
        self.assertS3Error("AccessDenied", 403, self.admin.put_object_acl, Bucket="acls",
                           Key="k", AccessControlPolicy=document)
        # Non-public ACLs are fine, in either form.
        document["Grants"].pop()
        self.admin.put_object_acl(Bucket="acls", Key="k", AccessControlPolicy=document)
        self.admin.put_bucket_acl(Bucket="acls", ACL="private")
        self.admin.delete_public_access_block(Bucket="acls")
        self.admin.put_object_acl(Bucket="acls", Key="k", ACL="public-read")

    def test_ignore_public_acls_ignores_them(self):
        self.admin.create_bucket(Bucket="ign", ObjectOwnership="ObjectWriter",
                                 ACL="public-read")
        self.admin.put_object(Bucket="ign", Key="k", Body=b"x", ACL="public-read")
        self.assertEqual(self.http("GET", "/ign/k")[0], 200)
        self.assertEqual(self.http("GET", "/ign")[0], 200)
        self.block("ign", IgnorePublicAcls=True)
        self.assertEqual(self.http("GET", "/ign/k")[0], 403)
        self.assertEqual(self.http("GET", "/ign")[0], 403)
        # The ACLs are kept, only ignored.
        self.assertIn((ALL_USERS, "READ"), self.grants(
            self.admin.get_object_acl(Bucket="ign", Key="k")))
        self.admin.delete_public_access_block(Bucket="ign")
        self.assertEqual(self.http("GET", "/ign/k")[0], 200)

    def test_block_public_policy_and_restrict_public_buckets(self):
        owner, owner_s3 = self.new_key("owner")
        reader, reader_s3 = self.new_key("reader")
        owner_s3.create_bucket(Bucket="pol")
        self.z4("bucket", "allow", "pol", "--key", "reader", "--read")
        owner_s3.put_object(Bucket="pol", Key="k", Body=b"x")
        owner_s3.put_public_access_block(Bucket="pol", PublicAccessBlockConfiguration={
            "BlockPublicPolicy": True})
        error = self.assertS3Error("AccessDenied", 403, owner_s3.put_bucket_policy,
                                   Bucket="pol", Policy=self.public_policy("pol"))
        self.assertIn("BlockPublicPolicy", error["Message"])
        self.assertS3Error("NoSuchBucketPolicy", 404, owner_s3.get_bucket_policy, Bucket="pol")
        # A policy that names its principals is not public: stored.
        owner_s3.put_bucket_policy(Bucket="pol", Policy=policy(
            {"Effect": "Allow", "Principal": {"AWS": reader["access_key_id"]},
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::pol/*"}))
        # A public policy stored before the block stays, and serves everyone...
        owner_s3.delete_public_access_block(Bucket="pol")
        owner_s3.put_bucket_policy(Bucket="pol", Policy=policy(
            {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": "arn:aws:s3:::pol/*"}))
        self.assertEqual(self.http("GET", "/pol/k")[0], 200)
        other, other_s3 = self.new_key("other")
        other_s3.put_object(Bucket="pol", Key="by-other", Body=b"x")
        # ...until RestrictPublicBuckets keeps it to the bucket's own keys.
        owner_s3.put_public_access_block(Bucket="pol", PublicAccessBlockConfiguration={
            "RestrictPublicBuckets": True})
        self.assertEqual(self.http("GET", "/pol/k")[0], 403)
        self.assertS3Error("AccessDenied", 403, other_s3.put_object, Bucket="pol",
                           Key="by-other", Body=b"x")
        reader_s3.put_object(Bucket="pol", Key="by-reader", Body=b"x")
        # The policy itself is still public (S3's PolicyStatus looks at it alone).
        self.assertIs(owner_s3.get_bucket_policy_status(Bucket="pol")["PolicyStatus"][
            "IsPublic"], True)


class PublicAccessBlockDefaultTests(AccessTestCase):
    def setUp(self):
        self.node = NodeProcess(self, args=["--block-public-access-default"]).start()
        self.admin = self.node.client()
        self.anonymous = self.node.client(signature_version=UNSIGNED)

    def test_new_buckets_start_with_every_flag_on(self):
        self.admin.create_bucket(Bucket="new")
        self.assertEqual(self.admin.get_public_access_block(Bucket="new")[
            "PublicAccessBlockConfiguration"], PublicAccessBlockTests.ALL)
        self.assertS3Error("AccessDenied", 403, self.admin.create_bucket, Bucket="open",
                           ObjectOwnership="ObjectWriter", ACL="public-read")
        self.assertEqual([b["Name"] for b in self.admin.list_buckets()["Buckets"]], ["new"])
        # Each bucket may change its own.
        self.admin.delete_public_access_block(Bucket="new")
        self.admin.put_bucket_policy(Bucket="new", Policy=policy(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::new/*"}))
