"""ListObjects (v1) and ListObjectsV2 against a real node: prefix,
delimiter and CommonPrefixes, max-keys, marker / continuation-token /
start-after, fetch-owner, encoding-type=url, and paging through a bucket of
thousands of keys with every page checked against a model of S3's rules."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions
from tests.test_s3_objects import unencoded_client


def model_listing(keys, prefix="", delimiter="", after=None, split=False):
    """What S3 lists, in byte order: the keys after ``after`` under prefix,
    those containing the delimiter rolled up into common prefixes, and a
    common prefix equal to ``after`` (the previous page's last item) left
    out; with ``split``, as (keys, common prefixes)."""
    out, found, common = [], [], []
    for key in sorted(keys, key=lambda k: k.encode()):
        if not key.startswith(prefix):
            continue
        if after is not None and key.encode() <= after.encode():
            continue
        item, is_prefix = key, False
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                item, is_prefix = key[:cut + len(delimiter)], True
        if item == after:
            continue
        if out and out[-1] == item:
            continue
        out.append(item)
        (common if is_prefix else found).append(item)
    return (found, common) if split else out


def bulk_put(node, bucket, keys, threads=8):
    """PUT a tiny object under every key, through a pool of boto3 clients."""
    local = threading.local()

    def put(key):
        if not hasattr(local, "s3"):
            local.s3 = node.client()
        local.s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, keys))


def page_items(page):
    return ([o["Key"] for o in page.get("Contents", [])],
            [p["Prefix"] for p in page.get("CommonPrefixes", [])])


# A small tree used by the shape tests.
TREE = ["a.txt", "b/1", "b/2", "b/c/3", "b/c/4", "b0", "c/", "c/d", "d/e/f", "e",
        "photos/2024/jan/1.jpg", "photos/2024/jan/2.jpg", "photos/2024/feb/1.jpg",
        "photos/2025/x.jpg", "photos/index.html", "z"]


class ListingShapeTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="tree")
        bulk_put(self.node, "tree", TREE)

    def test_prefix_and_delimiter(self):
        for listing in (self.s3.list_objects_v2, self.s3.list_objects):
            for prefix, delimiter in (("", ""), ("", "/"), ("b", ""), ("b", "/"),
                                      ("b/", "/"), ("b/c/", "/"), ("photos/", "/"),
                                      ("photos/2024/", "/"), ("photos/", "jan"),
                                      ("c/", "/"), ("nothing", "/"), ("", "."),
                                      ("photos/2024/jan/", "/")):
                page = listing(Bucket="tree", Prefix=prefix, Delimiter=delimiter)
                self.assertEqual(page_items(page),
                                 model_listing(TREE, prefix, delimiter, split=True),
                                 (prefix, delimiter))
                self.assertEqual(page["Prefix"], prefix)
                self.assertEqual(page.get("Delimiter", ""), delimiter)
                self.assertFalse(page["IsTruncated"])
        page = self.s3.list_objects_v2(Bucket="tree", Delimiter="/")
        self.assertEqual(page_items(page), (["a.txt", "b0", "e", "z"],
                                            ["b/", "c/", "d/", "photos/"]))
        self.assertEqual(page["KeyCount"], 8)
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="photos/2024/", Delimiter="/")
        self.assertEqual(page_items(page), ([], ["photos/2024/feb/", "photos/2024/jan/"]))
        # The "folder" object c/ is listed as a key under its own prefix.
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="c/", Delimiter="/")
        self.assertEqual(page_items(page), (["c/", "c/d"], []))

    def test_max_keys_and_paging_shapes(self):
        # Paging with a delimiter: common prefixes count toward max-keys,
        # and a prefix is never repeated on the next page.
        for max_keys in (1, 2, 3, 5):
            seen, token, pages = [], None, 0
            while True:
                kwargs = {"ContinuationToken": token} if token else {}
                page = self.s3.list_objects_v2(Bucket="tree", Delimiter="/",
                                               MaxKeys=max_keys, **kwargs)
                keys, prefixes = page_items(page)
                self.assertLessEqual(len(keys) + len(prefixes), max_keys)
                self.assertEqual(page["KeyCount"], len(keys) + len(prefixes))
                self.assertEqual(page["MaxKeys"], max_keys)
                seen += sorted(keys + prefixes, key=str.encode)
                pages += 1
                if not page["IsTruncated"]:
                    self.assertNotIn("NextContinuationToken", page)
                    break
                token = page["NextContinuationToken"]
            self.assertEqual(seen, model_listing(TREE, "", "/"), max_keys)
            self.assertEqual(pages, -(-8 // max_keys))
        # v1: markers, NextMarker only with a delimiter.
        page = self.s3.list_objects(Bucket="tree", MaxKeys=3)
        self.assertEqual(page_items(page)[0], ["a.txt", "b/1", "b/2"])
        self.assertTrue(page["IsTruncated"])
        self.assertNotIn("NextMarker", page)
        page = self.s3.list_objects(Bucket="tree", MaxKeys=3, Marker="b/2")
        self.assertEqual(page["Marker"], "b/2")
        self.assertEqual(page_items(page)[0], ["b/c/3", "b/c/4", "b0"])
        page = self.s3.list_objects(Bucket="tree", MaxKeys=2, Delimiter="/")
        self.assertEqual(page_items(page), (["a.txt"], ["b/"]))
        self.assertEqual(page["NextMarker"], "b/")
        page = self.s3.list_objects(Bucket="tree", MaxKeys=2, Delimiter="/",
                                    Marker=page["NextMarker"])
        self.assertEqual(page_items(page), (["b0"], ["c/"]))
        # max-keys 0 lists nothing, and says there is nothing more.
        page = self.s3.list_objects_v2(Bucket="tree", MaxKeys=0)
        self.assertEqual((page["KeyCount"], page["IsTruncated"]), (0, False))
        self.assertNotIn("Contents", page)
        self.assertNotIn("NextContinuationToken", page)
        page = self.s3.list_objects(Bucket="tree", MaxKeys=0, Delimiter="/")
        self.assertEqual(page["IsTruncated"], False)
        self.assertNotIn("Contents", page)
        self.assertNotIn("CommonPrefixes", page)
        self.assertS3Error("NoSuchBucket", 404, self.s3.list_objects_v2, Bucket="none",
                           MaxKeys=0)
        # max-keys above 1000 is capped at 1000.
        page = self.s3.list_objects_v2(Bucket="tree", MaxKeys=5000)
        self.assertEqual(page["MaxKeys"], 1000)
        self.assertEqual(page["KeyCount"], len(TREE))
        for bad in ("-1", "abc"):
            reply = s3http.request(self.node, "GET", f"/tree?list-type=2&max-keys={bad}")
            self.assertErrorReply(reply, "InvalidArgument", 400)

    def test_start_after_and_markers(self):
        for start_after in ("", "a", "a.txt", "b/", "b/c/3", "photos/2024/jan/2.jpg", "zz"):
            page = self.s3.list_objects_v2(Bucket="tree", StartAfter=start_after)
            self.assertEqual(page_items(page)[0],
                             model_listing(TREE, after=start_after or None), start_after)
            if start_after:
                self.assertEqual(page["StartAfter"], start_after)
            page = self.s3.list_objects(Bucket="tree", Marker=start_after)
            self.assertEqual(page_items(page)[0],
                             model_listing(TREE, after=start_after or None), start_after)
        # start-after inside a common prefix, with a delimiter.
        page = self.s3.list_objects_v2(Bucket="tree", Delimiter="/", StartAfter="b/1")
        keys, prefixes = page_items(page)
        self.assertEqual(sorted(keys + prefixes, key=str.encode),
                         model_listing(TREE, "", "/", after="b/1"))
        # start-after before the prefix, and after it.
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="photos/", StartAfter="a")
        self.assertEqual(len(page["Contents"]), 5)
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="photos/", StartAfter="q")
        self.assertEqual(page["KeyCount"], 0)
        # A continuation token wins over start-after.
        first = self.s3.list_objects_v2(Bucket="tree", MaxKeys=2)
        page = self.s3.list_objects_v2(Bucket="tree", MaxKeys=2, StartAfter="photos",
                                       ContinuationToken=first["NextContinuationToken"])
        self.assertEqual(page_items(page)[0], ["b/2", "b/c/3"])
        self.assertEqual(page["ContinuationToken"], first["NextContinuationToken"])
        for token in ("%25%25not-a-token", "%25%25"):
            reply = s3http.request(self.node, "GET",
                                   f"/tree?list-type=2&continuation-token={token}")
            self.assertErrorReply(reply, "InvalidArgument", 400)

    def test_fetch_owner_and_encoding(self):
        code, out, err = self.node.z4("--json", "key", "create", "writer")
        self.assertEqual(code, 0, err)
        writer_key = json.loads(out)
        self.assertEqual(self.node.z4("bucket", "allow", "tree", "--key", "writer",
                                      "--write", "--read")[0], 0)
        writer = self.node.client((writer_key["access_key_id"],
                                   writer_key["secret_access_key"]))
        writer.put_object(Bucket="tree", Key="by-writer", Body=b"w")
        admin_id = self.s3.list_buckets()["Owner"]["ID"]

        page = self.s3.list_objects_v2(Bucket="tree")
        self.assertNotIn("Owner", page["Contents"][0])
        page = self.s3.list_objects_v2(Bucket="tree", FetchOwner=True)
        owners = {o["Key"]: o["Owner"] for o in page["Contents"]}
        self.assertEqual(owners["by-writer"], {"ID": writer_key["user_id"],
                                               "DisplayName": "writer"})
        self.assertEqual(owners["a.txt"], {"ID": admin_id, "DisplayName": "admin"})
        # v1 always names the owner.
        page = self.s3.list_objects(Bucket="tree")
        owners = {o["Key"]: o["Owner"]["DisplayName"] for o in page["Contents"]}
        self.assertEqual((owners["by-writer"], owners["z"]), ("writer", "admin"))
        # Every entry carries its size, ETag, date and storage class.
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="a.txt")
        entry = page["Contents"][0]
        self.assertEqual((entry["Size"], entry["StorageClass"]), (5, "STANDARD"))
        head = self.s3.head_object(Bucket="tree", Key="a.txt")
        # HTTP dates have whole seconds, listings milliseconds.
        self.assertEqual((entry["ETag"], entry["LastModified"].replace(microsecond=0)),
                         (head["ETag"], head["LastModified"]))

        # encoding-type=url encodes keys, prefixes, delimiters, markers.
        awkward = ["sp ace/one", "sp ace/two", "plus+/x", "amp&/y", "pct%/z"]
        bulk_put(self.node, "tree", awkward)
        reply = s3http.request(
            self.node, "GET",
            "/tree?list-type=2&encoding-type=url&delimiter=%2F&prefix=&start-after=p")
        root = reply.xml()
        self.assertEqual(s3http.texts(root, "{s3}EncodingType"), ["url"])
        self.assertEqual([unquote_plus(d) for d in s3http.texts(root, "{s3}Delimiter")],
                         ["/"])
        prefixes = s3http.texts(root, "{s3}CommonPrefixes/{s3}Prefix")
        self.assertEqual([unquote_plus(p) for p in prefixes],
                         ["pct%/", "photos/", "plus+/", "sp ace/"])
        self.assertNotIn("sp ace/", prefixes)
        self.assertNotIn("plus+/", prefixes)
        page = self.s3.list_objects_v2(Bucket="tree", Prefix="sp ace/")
        self.assertEqual(page["Prefix"], "sp ace/")
        self.assertEqual(page_items(page)[0], ["sp ace/one", "sp ace/two"])
        page = self.s3.list_objects(Bucket="tree", Prefix="amp&", Delimiter="/")
        self.assertEqual(page_items(page)[1], ["amp&/"])
        plain = unencoded_client(self.node)
        page = plain.list_objects(Bucket="tree", Prefix="amp&", Delimiter="/",
                                  Marker="amp")
        self.assertEqual((page_items(page)[1], page["Marker"], page["Prefix"]),
                         (["amp&/"], "amp", "amp&"))
        reply = s3http.request(self.node, "GET", "/tree?encoding-type=base64")
        self.assertErrorReply(reply, "InvalidArgument", 400)

    def test_listing_missing_bucket_and_deleted_keys(self):
        self.assertS3Error("NoSuchBucket", 404, self.s3.list_objects_v2, Bucket="none")
        self.assertS3Error("NoSuchBucket", 404, self.s3.list_objects, Bucket="none")
        for key in ("b/1", "b/2", "b/c/3", "b/c/4"):
            self.s3.delete_object(Bucket="tree", Key=key)
        page = self.s3.list_objects_v2(Bucket="tree", Delimiter="/")
        self.assertNotIn("b/", page_items(page)[1])
        remaining = [k for k in TREE if not k.startswith("b/")]
        seen, token = [], None
        while True:
            kwargs = {"ContinuationToken": token} if token else {}
            page = self.s3.list_objects_v2(Bucket="tree", MaxKeys=2, **kwargs)
            seen += page_items(page)[0]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        self.assertEqual(seen, model_listing(remaining))


class ListingPagingTests(S3Assertions, TestCase):
    def test_paging_through_thousands_of_keys(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="many")
        keys = [f"dir{d:02d}/sub{s}/file-{n:03d}" for d in range(25)
                for s in range(2) for n in range(40)]
        keys += [f"top-{n:04d}" for n in range(500)]
        self.assertEqual(len(keys), 2500)
        bulk_put(node, "many", keys)

        # Flat, v2, 1000 a page (boto3's paginator as clients use it).
        seen = []
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many"))
        self.assertEqual([len(p["Contents"]) for p in pages], [1000, 1000, 500])
        for page in pages:
            seen += page_items(page)[0]
        self.assertEqual(seen, model_listing(keys))
        self.assertEqual([o["Size"] for p in pages for o in p["Contents"]][:3],
                         [len(k) for k in seen[:3]])

        # Flat, v1, 999 a page: every page exactly the model's slice.
        wanted = model_listing(keys)
        marker, offset = "", 0
        while True:
            page = s3.list_objects(Bucket="many", Marker=marker, MaxKeys=999)
            got = page_items(page)[0]
            self.assertEqual(got, wanted[offset:offset + 999])
            offset += len(got)
            if not page["IsTruncated"]:
                break
            marker = got[-1]
        self.assertEqual(offset, 2500)

        # With a delimiter, v2 pages of 7 over prefixes and keys alike.
        wanted = model_listing(keys, "", "/")
        self.assertEqual(len(wanted), 525)
        seen, token = [], None
        while True:
            kwargs = {"ContinuationToken": token} if token else {}
            page = s3.list_objects_v2(Bucket="many", Delimiter="/", MaxKeys=7, **kwargs)
            got = sorted(page_items(page)[0] + page_items(page)[1], key=str.encode)
            self.assertEqual(got, wanted[len(seen):len(seen) + 7])
            seen += got
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        self.assertEqual(seen, wanted)

        # Nested: a prefix and a delimiter, v1 paginator over 40-key dirs.
        pages = list(s3.get_paginator("list_objects").paginate(
            Bucket="many", Prefix="dir07/", Delimiter="/", PaginationConfig={"PageSize": 1}))
        self.assertEqual([p["Prefix"] for page in pages for p in page["CommonPrefixes"]],
                         ["dir07/sub0/", "dir07/sub1/"])
        pages = list(s3.get_paginator("list_objects_v2").paginate(
            Bucket="many", Prefix="dir07/sub1/", PaginationConfig={"PageSize": 15}))
        self.assertEqual([len(p["Contents"]) for p in pages], [15, 15, 10])
        self.assertEqual([o["Key"] for p in pages for o in p["Contents"]],
                         [f"dir07/sub1/file-{n:03d}" for n in range(40)])

        # Start-after in the middle, v2 unencoded client.
        plain = unencoded_client(node)
        page = plain.list_objects_v2(Bucket="many", StartAfter="dir24/sub1/file-038",
                                     MaxKeys=3)
        self.assertEqual(page_items(page)[0], ["dir24/sub1/file-039", "top-0000", "top-0001"])
