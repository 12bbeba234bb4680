"""Details clients notice (issue 14 item 8), through boto3 and raw HTTP
against a real node: ListBuckets paging, the delete-marker header of a
DELETE, InvalidTag, and the multipart checksum type each algorithm
allows. The other details are tested where their feature is: InvalidRange
for a copy range in test_s3_multipart; 400 InvalidPartNumber in
test_s3_objects and test_s3_depth; InvalidRetentionPeriod in
test_object_lock; 404 or 403 for a missing key and anonymous ListBuckets
(403 AccessDenied, as S3) in test_access_control and test_s3_auth;
ServerSideEncryptionConfigurationNotFoundError and the SSE-C errors of a
GET (no key 400 InvalidRequest, another key 403 AccessDenied) in
test_sse."""

from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions


class DetailTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()

    def test_list_buckets_pages(self):
        names = ["alpha-1", "alpha-2", "alpha-3", "beta-1", "gamma-1"]
        for name in names:
            self.s3.create_bucket(Bucket=name)
        # Without max-buckets: every bucket, no token.
        everything = self.s3.list_buckets()
        self.assertEqual([b["Name"] for b in everything["Buckets"]], names)
        self.assertNotIn("ContinuationToken", everything)
        seen, token = [], None
        while True:
            kwargs = {"ContinuationToken": token} if token else {}
            page = self.s3.list_buckets(MaxBuckets=2, **kwargs)
            self.assertLessEqual(len(page["Buckets"]), 2)
            seen += [b["Name"] for b in page["Buckets"]]
            token = page.get("ContinuationToken")
            if token is None:
                break
        self.assertEqual(seen, names)
        page = self.s3.list_buckets(Prefix="alpha-", MaxBuckets=2)
        self.assertEqual(([b["Name"] for b in page["Buckets"]], page["Prefix"]),
                         (["alpha-1", "alpha-2"], "alpha-"))
        rest = self.s3.list_buckets(Prefix="alpha-", MaxBuckets=2,
                                    ContinuationToken=page["ContinuationToken"])
        self.assertEqual([b["Name"] for b in rest["Buckets"]], ["alpha-3"])
        self.assertNotIn("ContinuationToken", rest)
        self.assertEqual(self.s3.list_buckets(BucketRegion="us-east-1")["Buckets"][0]["Name"],
                         "alpha-1")
        self.assertEqual(self.s3.list_buckets(BucketRegion="eu-west-1")["Buckets"], [])
        for bad in ("0", "10001", "x"):
            reply = s3http.request(self.node, "GET", f"/?max-buckets={bad}")
            self.assertErrorReply(reply, "InvalidArgument", 400)
        reply = s3http.request(self.node, "GET", "/?continuation-token=%25%25")
        self.assertErrorReply(reply, "InvalidArgument", 400)

    def test_delete_marker_header_only_where_a_marker_was_written(self):
        self.s3.create_bucket(Bucket="plain")
        self.s3.put_object(Bucket="plain", Key="k", Body=b"x")
        for _ in range(2):  # over the object, then over nothing
            reply = s3http.request(self.node, "DELETE", "/plain/k")
            self.assertEqual(reply.status, 204)
            self.assertNotIn("x-amz-delete-marker", reply.headers)
            self.assertNotIn("x-amz-version-id", reply.headers)
        self.s3.create_bucket(Bucket="versioned")
        self.s3.put_bucket_versioning(Bucket="versioned",
                                      VersioningConfiguration={"Status": "Enabled"})
        self.s3.put_object(Bucket="versioned", Key="k", Body=b"x")
        reply = s3http.request(self.node, "DELETE", "/versioned/k")
        self.assertEqual(reply.headers.get("x-amz-delete-marker"), "true")

    def test_bad_tags_are_invalid_tag(self):
        self.s3.create_bucket(Bucket="tags")
        self.s3.put_object(Bucket="tags", Key="k", Body=b"x")
        for tags in ([{"Key": "k" * 129, "Value": "v"}], [{"Key": "k", "Value": "v" * 257}],
                     [{"Key": "aws:reserved", "Value": "v"}]):
            self.assertS3Error("InvalidTag", 400, self.s3.put_object_tagging, Bucket="tags",
                               Key="k", Tagging={"TagSet": tags})
        # Too many tags on an object is BadRequest, as S3 answers.
        self.assertS3Error("BadRequest", 400, self.s3.put_object_tagging, Bucket="tags",
                           Key="k", Tagging={"TagSet": [{"Key": f"k{n}", "Value": "v"}
                                                        for n in range(11)]})
        self.assertS3Error("InvalidTag", 400, self.s3.put_object, Bucket="tags", Key="t",
                           Body=b"x", Tagging="k=" + "v" * 257)
        self.assertS3Error("InvalidTag", 400, self.s3.put_bucket_tagging, Bucket="tags",
                           Tagging={"TagSet": [{"Key": "k" * 129, "Value": "v"}]})

    def test_multipart_checksum_type_follows_the_algorithm(self):
        """CRC32 and CRC32C: COMPOSITE unless FULL_OBJECT is asked for;
        CRC64NVME: FULL_OBJECT only; SHA1 and SHA256: COMPOSITE only."""
        self.s3.create_bucket(Bucket="sums")
        for algorithm, asked, answered in (
                ("CRC32", None, "COMPOSITE"), ("CRC32", "FULL_OBJECT", "FULL_OBJECT"),
                ("CRC32C", None, "COMPOSITE"), ("CRC64NVME", None, "FULL_OBJECT"),
                ("SHA1", None, "COMPOSITE"), ("SHA256", "COMPOSITE", "COMPOSITE")):
            kwargs = {"ChecksumType": asked} if asked else {}
            created = self.s3.create_multipart_upload(
                Bucket="sums", Key=f"{algorithm}-{asked}", ChecksumAlgorithm=algorithm,
                **kwargs)
            self.assertEqual(created["ChecksumType"], answered, (algorithm, asked))
        for algorithm, asked in (("CRC64NVME", "COMPOSITE"), ("SHA1", "FULL_OBJECT"),
                                 ("SHA256", "FULL_OBJECT")):
            self.assertS3Error("InvalidRequest", 400, self.s3.create_multipart_upload,
                               Bucket="sums", Key="refused", ChecksumAlgorithm=algorithm,
                               ChecksumType=asked)
