"""Versioning: the object layer against a model (listing pages, chunk
references), and a real node driven by boto3 and the aws CLI."""

import json
import os

from botocore.exceptions import ClientError
import sqlite3

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from tests.test_storage import EngineTestCase
from z4node.objects import versioning
from z4node.objects.errors import ObjectError
from z4node.storage.crypto import PLAINTEXT
from z4node.storage.meta import SCHEMA, Version, _install_version, list_versions


def error_of(test, call, *args, **kwargs):
    with test.assertRaises(ClientError) as raised:
        call(*args, **kwargs)
    return raised.exception.response


class VersionIdTests(TestCase):
    def test_ids_carry_their_timestamp_and_sort_newest_first(self):
        ids = [versioning.new_version_id(hlc, os.urandom) for hlc in (5, 6, 1 << 40)]
        self.assertEqual([versioning.version_hlc(i) for i in ids], [5, 6, 1 << 40])
        self.assertEqual(sorted(ids), list(reversed(ids)))
        self.assertTrue(all(len(i) == 26 and i.isalnum() for i in ids))
        self.assertIsNone(versioning.version_hlc("null"))

    def test_ids_we_could_not_have_issued_are_invalid_arguments(self):
        for bad in ("x", "a" * 26 + "=", "!" * 26, ""):
            with self.assertRaises(ObjectError) as raised:
                versioning.version_hlc(bad)
            self.assertEqual(raised.exception.code, "InvalidArgument")


class VersionStoreTests(EngineTestCase):
    async def versioned(self, status=versioning.ENABLED):
        engine = await self.engine()
        await engine.objects.set_versioning("bkt", status)
        return engine

    async def test_versions_share_chunks_until_the_last_one_goes(self):
        engine = await self.versioned()
        data = os.urandom(5 * 1024 * 1024)
        first = await engine.put("k", data)
        second = await engine.put("k", data)
        self.assertNotEqual(first.version_id, second.version_id)
        digests = {h for h, _ in first.chunks}
        self.assertEqual(digests, {h for h, _ in second.chunks})

        async def refs():
            def read(c):
                return {h: r for h, r in c.execute("SELECT hash, refs FROM chunks")}
            return await engine.meta.db.read(read)
        self.assertEqual(set((await refs()).values()), {2})
        await engine.objects.delete_object("bkt", "k", "o", version_id=first.version_id)
        self.assertEqual(set((await refs()).values()), {1})
        self.assertEqual(await engine.get("k"), data)
        await engine.objects.delete_object("bkt", "k", "o")  # a marker frees nothing
        self.assertEqual(set((await refs()).values()), {1})
        await engine.objects.delete_object("bkt", "k", "o", version_id=second.version_id)
        self.assertEqual(set((await refs()).values()), {0})

    async def test_removing_the_newest_version_makes_the_previous_one_current(self):
        engine = await self.versioned()
        first = await engine.put("k", b"one")
        marker = await engine.objects.delete_object("bkt", "k", "o")
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.head_object("bkt", "k")
        self.assertEqual(raised.exception.version.version_id, marker.version_id)
        await engine.objects.delete_object("bkt", "k", "o", version_id=marker.version_id)
        self.assertEqual(await engine.get("k"), b"one")
        await engine.objects.delete_object("bkt", "k", "o", version_id=first.version_id)
        with self.assertRaises(ObjectError) as raised:
            await engine.objects.head_object("bkt", "k")
        self.assertIsNone(raised.exception.version)

    async def test_suspended_bucket_overwrites_only_the_null_version(self):
        engine = await self.versioned()
        kept = await engine.put("k", b"versioned")
        await engine.objects.set_versioning("bkt", versioning.SUSPENDED)
        null1 = await engine.put("k", b"null one")
        null2 = await engine.put("k", b"null two")
        self.assertEqual((null1.version_id, null2.version_id), ("null", "null"))
        items, _ = await engine.objects.list_versions("bkt", "", "", None, None, 100)
        self.assertEqual([(v.version_id, latest) for v, latest in items],
                         [("null", True), (kept.version_id, False)])
        marker = await engine.objects.delete_object("bkt", "k", "o")
        self.assertEqual((marker.version_id, marker.delete_marker), ("null", True))
        items, _ = await engine.objects.list_versions("bkt", "", "", None, None, 100)
        self.assertEqual([(v.version_id, v.delete_marker) for v, _ in items],
                         [("null", True), (kept.version_id, False)])

    async def test_tombstones_of_versioned_buckets_are_not_collected(self):
        engine = await self.engine()
        await engine.objects.create_bucket("plain", engine.key)
        await engine.put("k", b"x")
        await engine.put("k", b"x", bucket="plain")
        await engine.objects.set_versioning("bkt", versioning.ENABLED)
        await engine.objects.delete_object("bkt", "k", "o")
        await engine.objects.delete_object("plain", "k", "o")
        collected = await engine.meta.collect_tombstones(1 << 62, 100)
        self.assertEqual(collected, 1)
        items, _ = await engine.objects.list_versions("bkt", "", "", None, None, 100)
        self.assertEqual(len(items), 2)

    @settings(max_examples=150, deadline=None)
    @given(keys=st.lists(st.sampled_from(["a", "a/b", "a/c", "b", "b/d/e", "c", "\u00e9"]),
                         min_size=1, max_size=14),
           deletes=st.lists(st.booleans(), max_size=14),
           prefix=st.sampled_from(["", "a", "b/"]),
           delimiter=st.sampled_from(["", "/", "d"]),
           limit=st.integers(1, 5))
    def test_paging_matches_model(self, keys, deletes, prefix, delimiter, limit):
        """Walking every page with S3's markers lists exactly the model's
        versions and common prefixes, in S3's order."""
        c = sqlite3.connect(":memory:")
        c.executescript(SCHEMA)
        model = {}
        for hlc, key in enumerate(keys, start=1):
            marker = hlc - 1 < len(deletes) and deletes[hlc - 1]
            version_id = versioning.new_version_id(hlc, os.urandom)
            _install_version(c, Version("bkt", key, hlc, version_id, marker, 0, "", "o",
                                        {}, [], None if marker else b""), 0, PLAINTEXT)
            model.setdefault(key, []).insert(0, version_id)
        expected = []
        for key in sorted(model, key=lambda k: k.encode()):
            if not key.startswith(prefix):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[:cut + len(delimiter)]
                if common not in expected:
                    expected.append(common)
                continue
            expected.extend((key, vid, i == 0) for i, vid in enumerate(model[key]))
        got = []
        key_marker = version_marker = None
        while True:
            marker_hlc = versioning.version_hlc(version_marker) if version_marker else None
            items, truncated = list_versions(c, "bkt", prefix, delimiter, key_marker,
                                             version_marker, marker_hlc, limit)
            self.assertLessEqual(len(items), limit)
            got += [i if isinstance(i, str) else (i[0].key, i[0].version_id, i[1])
                    for i in items]
            if not truncated:
                break
            last = items[-1]
            if isinstance(last, str):
                key_marker, version_marker = last, None
            else:
                key_marker, version_marker = last[0].key, last[0].version_id
        self.assertEqual(got, expected)


class VersioningProcessTests(TestCase):
    """A real node, as boto3 and the aws CLI see it."""

    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()

    def versioned_bucket(self, name="vers"):
        self.s3.create_bucket(Bucket=name)
        self.s3.put_bucket_versioning(Bucket=name,
                                      VersioningConfiguration={"Status": "Enabled"})
        return name

    def test_never_enabled_bucket_keeps_null_semantics(self):
        s3 = self.s3
        s3.create_bucket(Bucket="plain")
        self.assertNotIn("Status", s3.get_bucket_versioning(Bucket="plain"))
        put = s3.put_object(Bucket="plain", Key="k", Body=b"one")
        self.assertNotIn("VersionId", put)
        got = s3.get_object(Bucket="plain", Key="k", VersionId="null")
        self.assertEqual(got["Body"].read(), b"one")
        listing = s3.list_object_versions(Bucket="plain")
        self.assertEqual([(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]],
                         [("null", True)])
        deleted = s3.delete_object(Bucket="plain", Key="k")
        self.assertNotIn("DeleteMarker", deleted)
        self.assertEqual(error_of(self, s3.get_object, Bucket="plain", Key="k")
                         ["Error"]["Code"], "NoSuchKey")

    def test_every_write_is_a_version_and_delete_writes_a_marker(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        self.assertEqual(s3.get_bucket_versioning(Bucket=bucket)["Status"], "Enabled")
        one = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
        two = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
        self.assertNotEqual(one, two)
        self.assertEqual(s3.get_object(Bucket=bucket, Key="doc")["Body"].read(), b"two")
        old = s3.get_object(Bucket=bucket, Key="doc", VersionId=one)
        self.assertEqual((old["Body"].read(), old["VersionId"]), (b"one", one))
        self.assertEqual(s3.head_object(Bucket=bucket, Key="doc", VersionId=one)
                         ["ContentLength"], 3)

        deleted = s3.delete_object(Bucket=bucket, Key="doc")
        self.assertTrue(deleted["DeleteMarker"])
        marker = deleted["VersionId"]
        response = error_of(self, s3.get_object, Bucket=bucket, Key="doc")
        self.assertEqual(response["Error"]["Code"], "NoSuchKey")
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        self.assertEqual((headers["x-amz-delete-marker"], headers["x-amz-version-id"]),
                         ("true", marker))
        response = error_of(self, s3.head_object, Bucket=bucket, Key="doc", VersionId=marker)
        self.assertEqual(response["ResponseMetadata"]["HTTPStatusCode"], 405)
        self.assertEqual(s3.list_objects_v2(Bucket=bucket)["KeyCount"], 0)

        listing = s3.list_object_versions(Bucket=bucket)
        self.assertEqual([(m["VersionId"], m["IsLatest"]) for m in listing["DeleteMarkers"]],
                         [(marker, True)])
        self.assertEqual([(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]],
                         [(two, False), (one, False)])

        # Removing the marker brings the object back; removing a version
        # is for good.
        undone = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
        self.assertEqual((undone["VersionId"], undone["DeleteMarker"]), (marker, True))
        self.assertEqual(s3.get_object(Bucket=bucket, Key="doc")["Body"].read(), b"two")
        s3.delete_object(Bucket=bucket, Key="doc", VersionId=two)
        self.assertEqual(s3.get_object(Bucket=bucket, Key="doc")["Body"].read(), b"one")
        self.assertEqual(error_of(self, s3.get_object, Bucket=bucket, Key="doc",
                                  VersionId=two)["Error"]["Code"], "NoSuchVersion")
        self.assertEqual(error_of(self, s3.get_object, Bucket=bucket, Key="doc",
                                  VersionId="not-an-id")["Error"]["Code"], "InvalidArgument")

    def test_suspended_bucket_overwrites_the_null_version(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
        s3.put_bucket_versioning(Bucket=bucket,
                                 VersioningConfiguration={"Status": "Suspended"})
        self.assertEqual(s3.get_bucket_versioning(Bucket=bucket)["Status"], "Suspended")
        self.assertEqual(s3.put_object(Bucket=bucket, Key="k", Body=b"a")["VersionId"],
                         "null")
        s3.put_object(Bucket=bucket, Key="k", Body=b"b")
        versions = s3.list_object_versions(Bucket=bucket)["Versions"]
        self.assertEqual([v["VersionId"] for v in versions], ["null", kept])
        self.assertEqual(s3.get_object(Bucket=bucket, Key="k", VersionId="null")
                         ["Body"].read(), b"b")
        deleted = s3.delete_object(Bucket=bucket, Key="k")
        self.assertEqual((deleted["VersionId"], deleted["DeleteMarker"]), ("null", True))
        listing = s3.list_object_versions(Bucket=bucket)
        self.assertEqual([v["VersionId"] for v in listing["Versions"]], [kept])
        self.assertEqual([m["VersionId"] for m in listing["DeleteMarkers"]], ["null"])

    def test_list_object_versions_pages_with_markers(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        expected = []
        for key in ("a/1", "a/2", "b", "c"):
            ids = [s3.put_object(Bucket=bucket, Key=key, Body=b"x")["VersionId"]
                   for _ in range(3)]
            expected += [(key, i) for i in reversed(ids)]
        seen = []
        kwargs = {}
        while True:
            page = s3.list_object_versions(Bucket=bucket, MaxKeys=2, **kwargs)
            seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
            if not page["IsTruncated"]:
                break
            kwargs = {"KeyMarker": page["NextKeyMarker"],
                      "VersionIdMarker": page["NextVersionIdMarker"]}
        self.assertEqual(seen, expected)
        grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/")
        self.assertEqual(grouped["CommonPrefixes"], [{"Prefix": "a/"}])
        self.assertEqual({v["Key"] for v in grouped["Versions"]}, {"b", "c"})
        only_a = s3.list_object_versions(Bucket=bucket, Prefix="a/", KeyMarker="a/1")
        self.assertEqual({v["Key"] for v in only_a["Versions"]}, {"a/2"})
        self.assertEqual(error_of(self, s3.list_object_versions, Bucket=bucket,
                                  VersionIdMarker=expected[0][1])["Error"]["Code"],
                         "InvalidArgument")
        # The paginator follows the same markers.
        paginated = [(v["Key"], v["VersionId"]) for page in s3.get_paginator(
            "list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 5})
            for v in page.get("Versions", [])]
        self.assertEqual(paginated, expected)

    def test_delete_objects_with_version_ids(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        one = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
        two = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
        result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
            {"Key": "k", "VersionId": one}, {"Key": "other"},
            {"Key": "k", "VersionId": "bogus"}]})
        deleted = {(d["Key"], d.get("VersionId")): d for d in result["Deleted"]}
        self.assertIn(("k", one), deleted)
        self.assertTrue(deleted[("other", None)]["DeleteMarker"])
        self.assertEqual([(e["Key"], e["Code"]) for e in result["Errors"]],
                         [("k", "InvalidArgument")])
        versions = s3.list_object_versions(Bucket=bucket)
        self.assertEqual([v["VersionId"] for v in versions["Versions"]], [two])
        self.assertEqual([m["Key"] for m in versions["DeleteMarkers"]], ["other"])

    def test_copy_and_multipart_take_and_make_versions(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        old = s3.put_object(Bucket=bucket, Key="src", Body=b"old")["VersionId"]
        s3.put_object(Bucket=bucket, Key="src", Body=b"new")
        copied = s3.copy_object(Bucket=bucket, Key="dst",
                                CopySource={"Bucket": bucket, "Key": "src", "VersionId": old})
        self.assertEqual(copied["CopySourceVersionId"], old)
        self.assertEqual(s3.get_object(Bucket=bucket, Key="dst")["Body"].read(), b"old")
        # Restoring an old version onto its own key is allowed.
        s3.copy_object(Bucket=bucket, Key="src",
                       CopySource={"Bucket": bucket, "Key": "src", "VersionId": old})
        self.assertEqual(s3.get_object(Bucket=bucket, Key="src")["Body"].read(), b"old")
        self.assertEqual(len(s3.list_object_versions(Bucket=bucket, Prefix="src")
                             ["Versions"]), 3)
        marker = s3.delete_object(Bucket=bucket, Key="src")["VersionId"]
        response = error_of(self, s3.copy_object, Bucket=bucket, Key="x",
                            CopySource={"Bucket": bucket, "Key": "src", "VersionId": marker})
        self.assertEqual(response["Error"]["Code"], "InvalidRequest")
        response = error_of(self, s3.copy_object, Bucket=bucket, Key="x",
                            CopySource={"Bucket": bucket, "Key": "src"})
        self.assertEqual(response["Error"]["Code"], "NoSuchKey")

        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                              Body=b"part")["ETag"]
        done = s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        self.assertEqual(s3.head_object(Bucket=bucket, Key="mp")["VersionId"],
                         done["VersionId"])

    def test_a_versioned_bucket_is_empty_only_without_versions(self):
        s3 = self.s3
        bucket = self.versioned_bucket()
        version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
        marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
        self.assertEqual(error_of(self, s3.delete_bucket, Bucket=bucket)["Error"]["Code"],
                         "BucketNotEmpty")
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version)
        self.assertEqual(error_of(self, s3.delete_bucket, Bucket=bucket)["Error"]["Code"],
                         "BucketNotEmpty")
        s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
        s3.delete_bucket(Bucket=bucket)

    def test_invalid_versioning_configuration(self):
        self.s3.create_bucket(Bucket="bad")
        response = error_of(self, self.s3.put_bucket_versioning, Bucket="bad",
                            VersioningConfiguration={"Status": "On"})
        self.assertEqual(response["Error"]["Code"], "MalformedXML")
        response = error_of(self, self.s3.put_bucket_versioning, Bucket="missing",
                            VersioningConfiguration={"Status": "Enabled"})
        self.assertEqual(response["Error"]["Code"], "NoSuchBucket")

    def test_aws_cli(self):
        node = self.node
        node.aws("s3api", "create-bucket", "--bucket", "cli")
        node.aws("s3api", "put-bucket-versioning", "--bucket", "cli",
                 "--versioning-configuration", "Status=Enabled")
        status = json.loads(node.aws("s3api", "get-bucket-versioning", "--bucket", "cli").stdout)
        self.assertEqual(status["Status"], "Enabled")
        path = os.path.join(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"v1")
        first = json.loads(node.aws("s3api", "put-object", "--bucket", "cli", "--key", "f",
                                    "--body", path).stdout)["VersionId"]
        node.aws("s3", "cp", path, "s3://cli/f")
        node.aws("s3", "rm", "s3://cli/f")
        listing = json.loads(node.aws("s3api", "list-object-versions", "--bucket", "cli").stdout)
        self.assertEqual(len(listing["Versions"]), 2)
        self.assertEqual(len(listing["DeleteMarkers"]), 1)
        out = path + ".out"
        node.aws("s3api", "get-object", "--bucket", "cli", "--key", "f", "--version-id", first,
                 out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"v1")

    def test_object_acls_are_per_version(self):
        s3 = self.s3
        bucket = self.versioned_bucket("acls")
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]})
        old = s3.put_object(Bucket=bucket, Key="k", Body=b"1", ACL="public-read")["VersionId"]
        s3.put_object(Bucket=bucket, Key="k", Body=b"2")

        def grantees(**kwargs):
            return {g["Grantee"].get("URI", g["Grantee"].get("ID")) for g in
                    s3.get_object_acl(Bucket=bucket, Key="k", **kwargs)["Grants"]}
        public = "http://acs.amazonaws.com/groups/global/AllUsers"
        self.assertIn(public, grantees(VersionId=old))
        self.assertNotIn(public, grantees())
        s3.put_object_acl(Bucket=bucket, Key="k", VersionId=old, ACL="private")
        self.assertNotIn(public, grantees(VersionId=old))
