"""The ``z4`` admin CLI against a running node, and the grants it sets
enforced on S3 requests made with boto3 by the keys it creates."""

import json
import os
import time

from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions


class AdminCliTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.admin = self.node.client()

    def z4(self, *args):
        code, out, err = self.node.z4(*args)
        self.assertEqual(code, 0, f"z4 {' '.join(args)} failed: {err}")
        return out

    def z4_fails(self, *args):
        code, out, err = self.node.z4(*args)
        self.assertEqual(code, 1, f"z4 {' '.join(args)} should have failed: {out}")
        self.assertTrue(err.startswith("z4: "), err)
        self.assertNotIn("Traceback", err)
        return err

    def new_key(self, name):
        """Create a key with the CLI; (its JSON, a boto3 client using it)."""
        key = json.loads(self.z4("key", "create", name, "--json"))
        return key, self.node.client((key["access_key_id"], key["secret_access_key"]))

    def test_keys(self):
        text = self.z4("key", "create", "alice")
        self.assertIn("Access key id: ", text)
        self.assertIn("Secret access key: ", text)
        fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
        alice = self.node.client((fields["Access key id"], fields["Secret access key"]))
        self.assertEqual(alice.list_buckets()["Owner"]["DisplayName"], "alice")

        bob = json.loads(self.z4("key", "create", "bob", "--json"))
        self.assertTrue({"name", "access_key_id", "secret_access_key", "user_id"} <= bob.keys())
        self.assertEqual(bob["name"], "bob")
        self.assertEqual(len(bob["user_id"]), 64)
        # --json before the command works too.
        carol = json.loads(self.z4("--json", "key", "create", "carol"))
        self.assertEqual(carol["name"], "carol")
        self.assertNotEqual(carol["access_key_id"], bob["access_key_id"])
        self.assertNotEqual(carol["user_id"], bob["user_id"])

        table = self.z4("key", "list").splitlines()
        self.assertEqual(table[0].split()[:3], ["NAME", "ACCESS", "KEY"])
        self.assertEqual([line.split()[0] for line in table[1:]],
                         ["admin", "alice", "bob", "carol"])
        self.assertIn(bob["access_key_id"], "\n".join(table))
        self.assertNotIn(bob["secret_access_key"], "\n".join(table))
        listed = json.loads(self.z4("key", "list", "--json"))
        self.assertEqual([(k["name"], k["admin"]) for k in listed],
                         [("admin", True), ("alice", False), ("bob", False), ("carol", False)])
        self.assertEqual(listed[0]["access_key_id"], self.node.credentials()[0])

        info = self.z4("key", "info", "bob")
        self.assertIn(bob["access_key_id"], info)
        self.assertIn(bob["user_id"], info)
        self.assertNotIn(bob["secret_access_key"], info)
        self.assertIn("No bucket grants.", info)
        self.assertIn(bob["secret_access_key"],
                      self.z4("key", "info", "bob", "--show-secret"))
        info = json.loads(self.z4("key", "info", "bob", "--json"))
        self.assertEqual((info["name"], info["access_key_id"], info["grants"]),
                         ("bob", bob["access_key_id"], []))

        self.assertIn("exists", self.z4_fails("key", "create", "bob"))
        self.z4_fails("key", "create", "bad name!")
        self.z4_fails("key", "info", "nobody")
        self.z4_fails("key", "delete", "nobody")

        # A deleted key stops working at once.
        bob_client = self.node.client((bob["access_key_id"], bob["secret_access_key"]))
        bob_client.list_buckets()
        self.z4("key", "delete", "bob")
        self.assertS3Error("InvalidAccessKeyId", 403, bob_client.list_buckets)
        self.assertNotIn("bob", [k["name"] for k in json.loads(self.z4("key", "list", "--json"))])
        self.z4_fails("key", "info", "bob")
        # The name may be used again, for a new key.
        again = json.loads(self.z4("key", "create", "bob", "--json"))
        self.assertNotEqual(again["access_key_id"], bob["access_key_id"])

        # Without a node, a clear error.
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        code, out, err = self.node.z4("--data", empty, "key", "list")
        self.assertEqual(code, 1)
        self.assertIn("no node is running", err)

    def test_buckets_and_grants(self):
        reader, reader_s3 = self.new_key("reader")
        writer, writer_s3 = self.new_key("writer")
        both, both_s3 = self.new_key("both")
        owner, owner_s3 = self.new_key("owner")
        stranger, stranger_s3 = self.new_key("stranger")

        self.assertIn("Created bucket shared", self.z4("bucket", "create", "shared"))
        created = json.loads(self.z4("bucket", "create", "owned", "--owner", "owner", "--json"))
        self.assertEqual(created["owner"], "owner")
        self.z4_fails("bucket", "create", "Bad_Name")
        self.z4_fails("bucket", "create", "shared")
        table = self.z4("bucket", "list").splitlines()
        self.assertEqual(table[0].split()[:2], ["NAME", "OWNER"])
        self.assertEqual([line.split()[:2] for line in table[1:]],
                         [["owned", "owner"], ["shared", "admin"]])
        self.admin.put_object(Bucket="shared", Key="existing", Body=b"data")

        self.z4("bucket", "allow", "shared", "--key", "reader", "--read")
        self.z4("bucket", "allow", "shared", "--key", "writer", "--write")
        self.z4("bucket", "allow", "shared", "--key", "both", "--read")
        granted = json.loads(self.z4("bucket", "allow", "shared", "--key", "both", "--write",
                                     "--json"))
        self.assertEqual((granted["read"], granted["write"], granted["owner"]),
                         (True, True, False))
        self.z4("bucket", "allow", "shared", "--key", "owner", "--owner")
        self.z4_fails("bucket", "allow", "shared", "--key", "reader")
        self.z4_fails("bucket", "allow", "missing", "--key", "reader", "--read")
        self.z4_fails("bucket", "allow", "shared", "--key", "nobody", "--read")
        info = json.loads(self.z4("key", "info", "both", "--json"))
        self.assertEqual([(g["bucket"], g["read"], g["write"], g["owner"])
                          for g in info["grants"]], [("shared", True, True, False)])
        self.assertIn("shared", self.z4("key", "info", "reader"))

        # No grant: nothing at all.
        for call, kwargs in ((stranger_s3.get_object, {"Key": "existing"}),
                             (stranger_s3.put_object, {"Key": "x", "Body": b"x"}),
                             (stranger_s3.list_objects_v2, {}),
                             (stranger_s3.delete_object, {"Key": "existing"}),
                             (stranger_s3.create_multipart_upload, {"Key": "x"}),
                             (stranger_s3.delete_bucket, {})):
            self.assertS3Error("AccessDenied", 403, call, Bucket="shared", **kwargs)
        self.assertS3Error("403", 403, stranger_s3.head_bucket, Bucket="shared")
        self.assertS3Error("403", 403, stranger_s3.head_object, Bucket="shared", Key="existing")
        self.assertEqual(stranger_s3.list_buckets()["Buckets"], [])

        # --read: GET, HEAD, listings; not PUT, DELETE or multipart.
        self.assertEqual(reader_s3.get_object(Bucket="shared", Key="existing")["Body"].read(),
                         b"data")
        reader_s3.head_object(Bucket="shared", Key="existing")
        reader_s3.head_bucket(Bucket="shared")
        self.assertEqual(reader_s3.list_objects_v2(Bucket="shared")["KeyCount"], 1)
        self.assertEqual(len(reader_s3.list_objects(Bucket="shared")["Contents"]), 1)
        self.assertEqual([b["Name"] for b in reader_s3.list_buckets()["Buckets"]], ["shared"])
        for call, kwargs in ((reader_s3.put_object, {"Key": "x", "Body": b"x"}),
                             (reader_s3.delete_object, {"Key": "existing"}),
                             (reader_s3.delete_objects,
                              {"Delete": {"Objects": [{"Key": "existing"}]}}),
                             (reader_s3.copy_object, {"Key": "x",
                                                      "CopySource": "shared/existing"}),
                             (reader_s3.create_multipart_upload, {"Key": "x"}),
                             (reader_s3.delete_bucket, {})):
            self.assertS3Error("AccessDenied", 403, call, Bucket="shared", **kwargs)
        self.assertEqual(self.admin.list_objects_v2(Bucket="shared")["KeyCount"], 1)

        # --write: PUT, DELETE, multipart; not GET or listings, not DeleteBucket.
        writer_s3.put_object(Bucket="shared", Key="by-writer", Body=b"w")
        upload = writer_s3.create_multipart_upload(Bucket="shared", Key="mp")["UploadId"]
        etag = writer_s3.upload_part(Bucket="shared", Key="mp", UploadId=upload,
                                     PartNumber=1, Body=b"part")["ETag"]
        writer_s3.complete_multipart_upload(
            Bucket="shared", Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        upload = writer_s3.create_multipart_upload(Bucket="shared", Key="mp2")["UploadId"]
        writer_s3.abort_multipart_upload(Bucket="shared", Key="mp2", UploadId=upload)
        writer_s3.delete_object(Bucket="shared", Key="mp")
        # (What the writer wrote it owns and may read: new buckets have ACLs
        # on, ObjectWriter, and an object's ACL grants its owner.)
        self.assertEqual(writer_s3.get_object(Bucket="shared", Key="by-writer")["Body"].read(),
                         b"w")
        for call, kwargs in ((writer_s3.get_object, {"Key": "existing"}),
                             (writer_s3.list_objects_v2, {}),
                             (writer_s3.delete_bucket, {}),
                             # A copy needs read access to its source.
                             (writer_s3.copy_object, {"Key": "c",
                                                      "CopySource": "shared/existing"})):
            self.assertS3Error("AccessDenied", 403, call, Bucket="shared", **kwargs)
        self.assertEqual(self.admin.get_object(Bucket="shared", Key="by-writer")["Body"].read(),
                         b"w")
        self.assertS3Error("NoSuchKey", 404, self.admin.get_object, Bucket="shared", Key="mp")

        # --read and --write: copies within the bucket, deletes in bulk.
        both_s3.copy_object(Bucket="shared", Key="copied", CopySource="shared/existing")
        self.assertEqual(both_s3.get_object(Bucket="shared", Key="copied")["Body"].read(),
                         b"data")
        both_s3.delete_objects(Bucket="shared", Delete={"Objects": [{"Key": "copied"}]})
        self.assertS3Error("AccessDenied", 403, both_s3.delete_bucket, Bucket="shared")
        # ...but not out of a bucket it has no grant on.
        self.assertS3Error("AccessDenied", 403, both_s3.copy_object, Bucket="shared",
                           Key="stolen", CopySource="owned/anything")

        # Each key's objects carry its owner in listings.
        listing = self.admin.list_objects(Bucket="shared")
        owners = {o["Key"]: o["Owner"] for o in listing["Contents"]}
        self.assertEqual(owners["by-writer"], {"ID": writer["user_id"], "DisplayName": "writer"})
        self.assertEqual(owners["existing"]["DisplayName"], "admin")
        listing = reader_s3.list_objects_v2(Bucket="shared", FetchOwner=True)
        owners = {o["Key"]: o["Owner"]["DisplayName"] for o in listing["Contents"]}
        self.assertEqual(owners, {"by-writer": "writer", "existing": "admin"})
        self.assertEqual(owner_s3.list_buckets()["Owner"],
                         {"ID": owner["user_id"], "DisplayName": "owner"})

        # deny takes rights away: one, or all.
        self.z4("bucket", "deny", "shared", "--key", "both", "--write")
        both_s3.get_object(Bucket="shared", Key="existing")
        self.assertS3Error("AccessDenied", 403, both_s3.put_object, Bucket="shared",
                           Key="x", Body=b"x")
        self.z4("bucket", "deny", "shared", "--key", "reader")
        self.assertS3Error("AccessDenied", 403, reader_s3.get_object, Bucket="shared",
                           Key="existing")
        self.assertEqual(reader_s3.list_buckets()["Buckets"], [])
        self.assertEqual(json.loads(self.z4("key", "info", "reader", "--json"))["grants"], [])

        # --owner: everything, DeleteBucket included; the admin key too.
        owner_s3.put_object(Bucket="shared", Key="o", Body=b"o")
        self.assertEqual(owner_s3.get_object(Bucket="shared", Key="o")["Body"].read(), b"o")
        self.admin.put_object(Bucket="owned", Key="admin-was-here", Body=b"a")
        self.assertEqual(owner_s3.list_objects_v2(Bucket="owned")["Contents"][0]["Key"],
                         "admin-was-here")
        self.admin.delete_object(Bucket="owned", Key="admin-was-here")
        owner_s3.delete_bucket(Bucket="owned")
        for key in ("o", "by-writer", "existing"):
            owner_s3.delete_object(Bucket="shared", Key=key)
        owner_s3.delete_bucket(Bucket="shared")
        self.assertEqual(self.admin.list_buckets()["Buckets"], [])
        self.assertEqual(json.loads(self.z4("bucket", "list", "--json")), [])

        # Grants survive a restart.
        self.z4("bucket", "create", "kept")
        self.z4("bucket", "allow", "kept", "--key", "reader", "--read")
        self.node.stop()
        self.node.start()
        reader_s3.head_bucket(Bucket="kept")
        self.assertS3Error("AccessDenied", 403, reader_s3.put_object, Bucket="kept",
                           Key="x", Body=b"x")

    def test_cluster_status_and_scrub_watch_without_a_terminal(self):
        self.admin.create_bucket(Bucket="bkt")
        self.admin.put_object(Bucket="bkt", Key="k", Body=os.urandom(50_000))
        text = self.z4("cluster", "status")
        for row in ("system tables", "peer channel", "channel packets", "scrub", "hints",
                    "rebalance", "anti-entropy", "gc"):
            self.assertRegex(text, rf"(?m)^{row}\s+\S", row)
        # A node alone has nowhere to move its data, and nobody to compare with.
        self.assertIn("no other node takes data", self.z4_fails("cluster", "drain"))
        self.assertRegex(self.z4("cluster", "repair"),
                         r"Anti-entropy pass done in [\d.]+ s: 0 entries and chunks repaired")
        status = json.loads(self.z4("cluster", "status", "--json"))
        self.assertIn("quorum", status["jobs"]["system_tables"])
        self.assertIn("calls", status["channel"])

        passes = json.loads(self.z4("scrub", "start", "--json"))["passes"]
        # --watch returns once the pass ends; no terminal, so no escape codes.
        text = self.z4("scrub", "status", "--watch")
        self.assertNotIn("\x1b", text)
        self.assertIn("Passes done: ", text)
        deadline = time.monotonic() + 60
        while json.loads(self.z4("scrub", "status", "--json"))["passes"] == passes:
            self.assertLess(time.monotonic(), deadline, "the scrub pass never ended")
            time.sleep(0.2)
        watched = json.loads(self.z4("scrub", "status", "--watch", "--json"))
        self.assertGreater(watched["passes"], passes)
