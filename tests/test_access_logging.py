"""Server access logging (issue 14 item 6): PutBucketLogging /
GetBucketLogging through boto3 against a real node, log objects delivered
into the target bucket in S3's record format, the refusals of a target the
logging service may not write to; and the record format, the log object
names, the delivery worker and the service principal in policies, in
process on a Clock."""

import json
import random
import re
import time
import urllib.request

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from z4node.objects import access_logging
from z4node.s3 import policy as policies
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions

# One record field: [time], "quoted text" (with \" escapes), or a word.
_FIELD = re.compile(r'\[[^\]]*\]|"(?:[^"\\]|\\.)*"|\S+')
FIELDS = ("bucket_owner", "bucket", "time", "remote_ip", "requester", "request_id",
          "operation", "key", "request_uri", "status", "error_code", "bytes_sent",
          "object_size", "total_time", "turn_around_time", "referer", "user_agent",
          "version_id", "host_id", "signature_version", "cipher_suite", "auth_type",
          "host_header", "tls_version", "access_point_arn", "acl_required")


def parse_record(line):
    values = _FIELD.findall(line)
    if len(values) != len(FIELDS):
        raise AssertionError(f"{len(values)} fields in {line!r}")
    return dict(zip(FIELDS, values))


def logging_policy(target, prefix="logs/", source="src"):
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "S3ServerAccessLogsPolicy", "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{target}/{prefix}*",
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{source}"}}}]})


class BucketLoggingTests(S3Assertions, TestCase):
    # Generous: the box is loaded; the node delivers every second.
    deadline_seconds = 60

    def setUp(self):
        self.node = NodeProcess(self, env={"Z4_ACCESS_LOGGING_INTERVAL": "1"},
                                args=["--metrics-public"]).start()
        self.s3 = self.node.client()
        for name in ("src", "logs", "closed"):
            self.s3.create_bucket(Bucket=name)

    def enable(self, target="logs", prefix="logs/"):
        self.s3.put_bucket_logging(Bucket="src", BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": target, "TargetPrefix": prefix}})

    def wait_for_records(self, count):
        deadline = time.monotonic() + self.deadline_seconds
        while True:
            listed = self.s3.list_objects_v2(Bucket="logs", Prefix="logs/")
            records = []
            for entry in listed.get("Contents", []):
                body = self.s3.get_object(Bucket="logs", Key=entry["Key"])["Body"].read()
                records += [parse_record(line) for line in body.decode().splitlines()]
            if len(records) >= count or time.monotonic() > deadline:
                return listed.get("Contents", []), records
            time.sleep(0.5)

    def test_get_logging_of_a_bucket_without_it(self):
        answer = self.s3.get_bucket_logging(Bucket="src")
        self.assertNotIn("LoggingEnabled", answer)

    def test_logs_are_delivered_to_the_target_bucket(self):
        s3 = self.s3
        s3.put_bucket_policy(Bucket="logs", Policy=logging_policy("logs"))
        self.enable()
        self.assertEqual(s3.get_bucket_logging(Bucket="src")["LoggingEnabled"],
                         {"TargetBucket": "logs", "TargetPrefix": "logs/",
                          "TargetObjectKeyFormat": {"SimplePrefix": {}}})
        put = s3.put_object(Bucket="src", Key="a b/c.txt", Body=b"hello")
        s3.get_object(Bucket="src", Key="a b/c.txt")["Body"].read()
        self.assertS3Error("NoSuchKey", 404, s3.get_object, Bucket="src", Key="missing")
        # Presigned URLs, SigV2 (boto3's default for S3 here) and SigV4.
        for client in (s3, self.node.client(signature_version="s3v4")):
            url = client.generate_presigned_url("get_object", Params={"Bucket": "src",
                                                                      "Key": "a b/c.txt"})
            with urllib.request.urlopen(url) as reply:
                self.assertEqual(reply.read(), b"hello")
        objects, records = self.wait_for_records(7)
        self.assertEqual(len(records), 7, records)
        # The configuration requests themselves come first.
        self.assertEqual([r["operation"] for r in records[:2]],
                         ["REST.PUT.LOGGING_STATUS", "REST.GET.LOGGING_STATUS"])
        for entry in objects:
            self.assertRegex(entry["Key"],
                             r"^logs/\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-[0-9A-F]{16}$")
        put_record, get_record, missing, presigned, presigned4 = records[2:]
        owner = s3.get_bucket_acl(Bucket="src")["Owner"]["ID"]
        self.assertEqual(put_record["bucket_owner"], owner)
        self.assertEqual(put_record["bucket"], "src")
        self.assertRegex(put_record["time"],
                         r"^\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\]$")
        self.assertEqual(put_record["remote_ip"], "127.0.0.1")
        self.assertEqual(put_record["requester"], owner)
        self.assertEqual(put_record["operation"], "REST.PUT.OBJECT")
        self.assertEqual(put_record["key"], "a%20b/c.txt")
        self.assertEqual(put_record["request_uri"], '"PUT /src/a%20b/c.txt HTTP/1.1"')
        self.assertEqual(put_record["status"], "200")
        self.assertEqual(put_record["error_code"], "-")
        self.assertEqual(put_record["signature_version"], "SigV4")
        self.assertEqual(put_record["auth_type"], "AuthHeader")
        self.assertEqual(put_record["host_header"], f"127.0.0.1:{self.node.port}")
        self.assertIn("Boto3", put_record["user_agent"])
        self.assertEqual(put_record["request_id"],
                         put["ResponseMetadata"]["RequestId"])
        self.assertEqual(get_record["operation"], "REST.GET.OBJECT")
        self.assertEqual(get_record["bytes_sent"], "5")
        self.assertEqual((put_record["object_size"], get_record["object_size"]), ("5", "5"))
        self.assertEqual(missing["object_size"], "-")
        # The delivery's counters are metrics.
        with urllib.request.urlopen(self.node.endpoint + "/metrics") as reply:
            exposition = reply.read().decode()
        delivered = re.search(r"^z4_access_logging_objects_total (\S+)$", exposition, re.M)
        self.assertGreaterEqual(float(delivered.group(1)), 1)
        self.assertIn('z4_job_runs_total{task="access_logging"}', exposition)
        # Log objects belong to the target bucket's owner.
        self.assertEqual(s3.get_object_acl(Bucket="logs", Key=objects[0]["Key"])["Owner"]["ID"],
                         s3.get_bucket_acl(Bucket="logs")["Owner"]["ID"])
        self.assertEqual((missing["status"], missing["error_code"]), ("404", "NoSuchKey"))
        # A presigned URL's signature never reaches the log.
        self.assertEqual((presigned["auth_type"], presigned["signature_version"]),
                         ("QueryString", "SigV2"))
        self.assertNotIn("Signature", presigned["request_uri"])
        self.assertIn("AWSAccessKeyId", presigned["request_uri"])
        self.assertEqual((presigned4["auth_type"], presigned4["signature_version"]),
                         ("QueryString", "SigV4"))
        self.assertNotIn("Signature", presigned4["request_uri"])
        self.assertIn("X-Amz-Credential", presigned4["request_uri"])

    def test_a_target_the_logging_service_may_not_write_to_is_refused(self):
        s3 = self.s3
        # No policy at all.
        self.assertS3Error("InvalidTargetBucketForLogging", 400, self.enable, "closed")
        # A policy that grants another prefix, or another source bucket.
        s3.put_bucket_policy(Bucket="closed", Policy=logging_policy("closed", "other/"))
        self.assertS3Error("InvalidTargetBucketForLogging", 400, self.enable, "closed")
        s3.put_bucket_policy(Bucket="closed",
                             Policy=logging_policy("closed", source="elsewhere"))
        self.assertS3Error("InvalidTargetBucketForLogging", 400, self.enable, "closed")
        # No such bucket.
        self.assertS3Error("InvalidTargetBucketForLogging", 400, self.enable, "nothere")
        self.assertNotIn("LoggingEnabled", s3.get_bucket_logging(Bucket="src"))

    def test_logging_is_turned_off_by_an_empty_status(self):
        self.s3.put_bucket_policy(Bucket="logs", Policy=logging_policy("logs"))
        self.enable()
        self.s3.put_bucket_logging(Bucket="src", BucketLoggingStatus={})
        self.assertNotIn("LoggingEnabled", self.s3.get_bucket_logging(Bucket="src"))

    def test_a_malformed_status_is_refused(self):
        self.s3.put_bucket_policy(Bucket="logs", Policy=logging_policy("logs", ""))
        # Log object keys would pass S3's 1,024 bytes.
        self.assertS3Error("InvalidArgument", 400, self.enable, "logs", "p" * 900)
        self.assertS3Error("MalformedXML", 400, self.s3.put_bucket_logging, Bucket="src",
                           BucketLoggingStatus={"LoggingEnabled": {
                               "TargetBucket": "logs", "TargetPrefix": "logs/",
                               "TargetObjectKeyFormat": {"PartitionedPrefix": {
                                   "PartitionDateSource": "Tomorrow"}}}})


class TlsLoggingTests(TestCase):
    def test_the_cipher_suite_and_tls_version_are_logged(self):
        node = NodeProcess(self, env={"Z4_ACCESS_LOGGING_INTERVAL": "1"}, tls=True).start()
        s3 = node.client()
        s3.create_bucket(Bucket="src")
        s3.create_bucket(Bucket="logs")
        s3.put_bucket_policy(Bucket="logs", Policy=logging_policy("logs"))
        s3.put_bucket_logging(Bucket="src", BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": "logs", "TargetPrefix": "logs/"}})
        deadline = time.monotonic() + BucketLoggingTests.deadline_seconds
        while True:
            listed = s3.list_objects_v2(Bucket="logs").get("Contents", [])
            if listed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        body = s3.get_object(Bucket="logs", Key=listed[0]["Key"])["Body"].read()
        record = parse_record(body.decode().splitlines()[0])
        self.assertRegex(record["tls_version"], r"^TLSv1\.[23]$")
        self.assertRegex(record["cipher_suite"], r"^[A-Z0-9_-]+$")
        self.assertNotEqual(record["cipher_suite"], "-")


class _Request:
    """What the hook reads of a twisted.web request."""

    def __init__(self, uri, version_id=None):
        self.uri = uri
        self.clientproto = b"HTTP/1.1"
        from twisted.web.http_headers import Headers
        self.responseHeaders = Headers()
        if version_id:
            self.responseHeaders.setRawHeaders(b"x-amz-version-id", [version_id])

    def getClientAddress(self):
        class Address:
            host = "127.0.0.1"
        return Address()


class RecordTests(TestCase):
    def test_time_format(self):
        self.assertEqual(access_logging.log_time(1549411238),
                         "[06/Feb/2019:00:00:38 +0000]")

    def test_signatures_and_tokens_are_left_out_of_the_request_line(self):
        line = access_logging.request_line(
            "GET", "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"
            "&X-Amz-Security-Token=t&x=1", "HTTP/1.1")
        self.assertEqual(line, "GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&x=1 HTTP/1.1")
        self.assertEqual(access_logging.request_line(
            "GET", "/b/k?AWSAccessKeyId=A&Signature=s&Expires=1", "HTTP/1.1"),
            "GET /b/k?AWSAccessKeyId=A&Expires=1 HTTP/1.1")
        self.assertEqual(access_logging.request_line("GET", "/b/k?Signature=s", "HTTP/1.1"),
                         "GET /b/k HTTP/1.1")

    def test_operation_names(self):
        self.assertEqual(access_logging.operation_name("GET", "GetObject", "k"),
                         "REST.GET.OBJECT")
        self.assertEqual(access_logging.operation_name("PUT", "CopyObject", "k"),
                         "REST.COPY.OBJECT")
        self.assertEqual(access_logging.operation_name("GET", "ListObjectsV2", None),
                         "REST.GET.BUCKET")
        # Refused before it was routed.
        self.assertEqual(access_logging.operation_name("GET", None, None),
                         "REST.GET.BUCKET")

    def test_free_text_cannot_break_the_fields(self):
        line = access_logging.record(
            "o", "b", 0, "1.2.3.4", None, "R", "REST.GET.OBJECT", "k", "GET /b/k HTTP/1.1",
            200, None, 0, None, 3, None, None, 'evil" 1 2 "3\nx', None, "R", None, None,
            None, "h", None)
        self.assertEqual(line.count("\n"), 1)
        record = parse_record(line)
        self.assertEqual(record["user_agent"], '"evil\\" 1 2 \\"3\\x0Ax"')
        self.assertEqual(record["bytes_sent"], "-")
        self.assertEqual(record["requester"], "-")

    def test_partitioned_object_keys(self):
        config = {"target_prefix": "p/", "partitioned": "EventTime"}
        key = access_logging.log_object_key(config, "owner", "src", 1549411238 + 86400,
                                            1549411238, "0123456789ABCDEF")
        self.assertEqual(key, "p/owner/us-east-1/src/2019/02/06/"
                              "2019-02-07-00-00-38-0123456789ABCDEF")
        config["partitioned"] = "DeliveryTime"
        key = access_logging.log_object_key(config, "owner", "src", 1549411238 + 86400,
                                            1549411238, "0123456789ABCDEF")
        self.assertTrue(key.startswith("p/owner/us-east-1/src/2019/02/07/"))


class ServicePrincipalTests(TestCase):
    def test_service_principals_are_accepted_and_name_only_the_service(self):
        policy = policies.parse(logging_policy("logs"), "logs")
        service = policies.Principal(None, None, None, service="logging.s3.amazonaws.com")
        user = policies.Principal("AK", "f" * 64, "logging.s3.amazonaws.com")
        context = {"aws:sourcearn": ["arn:aws:s3:::src"]}
        for principal, allowed in ((service, True), (user, False)):
            verdict = policies.evaluate(policy, policies.Query(
                principal, "s3:PutObject", "arn:aws:s3:::logs/logs/x", context))
            self.assertEqual(verdict.allow is not None, allowed, principal)
        self.assertFalse(policy.is_public())

    def test_malformed_service_principals_are_refused(self):
        for name in ("", "*", "logging s3", ["a.b", 3]):
            text = json.dumps({"Statement": [{
                "Effect": "Allow", "Principal": {"Service": name},
                "Action": "s3:PutObject", "Resource": "arn:aws:s3:::logs/*"}]})
            with self.assertRaises(Exception) as raised:
                policies.parse(text, "logs")
            self.assertEqual(raised.exception.code, "MalformedPolicy", name)


class _Objects:
    """The ObjectService calls the delivery makes; ``fail`` makes the next
    put fail."""

    def __init__(self):
        logging_on = {access_logging.SETTING: {"target_bucket": "logs",
                                               "target_prefix": "p/",
                                               "partitioned": None}}
        self.buckets = {"src": SimpleNamespace(name="src", owner="o1", settings=logging_on),
                        "logs": SimpleNamespace(name="logs", owner="o2", settings={})}
        self.system = SimpleNamespace(bucket=self.buckets.get)
        self.stored = {}
        self.fail = False

    async def put_object(self, bucket, key, body, *, owner, meta):
        if self.fail:
            self.fail = False
            raise OSError("disk full")
        data = b"".join([piece async for piece in body])
        self.stored[(bucket, key)] = (owner, data)


def _call(key="k"):
    return SimpleNamespace(bucket="src", key=key, method="GET", operation="GetObject",
                           headers={"host": "h"}, credentials=None, access_key=None,
                           decision=None, error_code=None)


class DeliveryTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1549411238)
        self.objects = _Objects()
        self.allowed = True
        self.log = access_logging.ServerAccessLog(
            self.clock, self.objects, lambda target, prefix, source: self.allowed,
            random.Random(1), interval=10, max_records=3)
        self.log.start()
        self.addCleanup(self.log.job.stop)

    def request(self, key="k"):
        self.log.answered(_Request(b"/src/" + key.encode()), _call(key), "RID", 200, 0,
                          5, 2.5)

    def delivered(self):
        return [(key, owner, data.decode().splitlines())
                for (bucket, key), (owner, data) in sorted(self.objects.stored.items())]

    def test_records_are_delivered_every_interval_as_the_target_owners_object(self):
        self.request()
        self.request("other")
        self.assertEqual(self.delivered(), [])
        self.clock.advance(10)
        [(key, owner, lines)] = self.delivered()
        self.assertRegex(key, r"^p/2019-02-06-00-00-48-[0-9A-F]{16}$")
        self.assertEqual(owner, "o2")
        records = [parse_record(line) for line in lines]
        self.assertEqual([r["key"] for r in records], ["k", "other"])
        # Dated when the request came in, 2.5 s before it was answered.
        self.assertEqual(records[0]["time"], "[06/Feb/2019:00:00:35 +0000]")
        self.assertEqual(records[0]["total_time"], "2500")
        self.assertEqual(self.log.counters["objects"], 1)

    def test_a_full_buffer_is_delivered_at_once(self):
        for _ in range(3):
            self.request()
        self.assertEqual(len(self.delivered()), 1)

    def test_a_failed_delivery_keeps_the_records_for_the_next_run(self):
        self.objects.fail = True
        self.request("first")
        self.clock.advance(10)
        self.assertEqual(self.delivered(), [])
        self.assertEqual(self.log.counters["failed"], 1)
        self.request("second")
        self.clock.advance(10)
        [(_, _, lines)] = self.delivered()
        self.assertEqual([parse_record(line)["key"] for line in lines],
                         ["first", "second"])
        self.assertTrue(self.log.job.running)

    def test_a_target_that_no_longer_allows_the_service_loses_its_records(self):
        self.allowed = False
        self.request()
        self.clock.advance(10)
        self.assertEqual(self.delivered(), [])
        self.assertEqual(self.log.counters["refused"], 1)
        self.allowed = True
        self.clock.advance(10)
        self.assertEqual(self.delivered(), [])

    def test_a_stop_delivers_what_is_buffered(self):
        self.request()
        self.successResultOf(self.log.stop())
        self.assertEqual(len(self.delivered()), 1)
        self.assertFalse(self.log.job.running)

    def test_buckets_without_logging_are_not_logged(self):
        self.objects.buckets["src"].settings = {}
        self.request()
        self.assertEqual(self.log.counters["records"], 0)
