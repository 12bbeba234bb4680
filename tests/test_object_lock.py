"""Object Lock: retention modes, legal holds, bucket defaults and the
errors S3 answers, through boto3 against a real node; and the way backup
tools such as Veeam use it (COMPLIANCE retention on every write)."""

import base64
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from z4node.objects import lock
from z4node.objects.errors import ObjectError
from z4node.storage.meta import Version


def in_days(days):
    return datetime.now(timezone.utc) + timedelta(days=days)


def md5_of(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def version(meta):
    return Version("b", "k", 1, "v", False, 0, "", "o", meta, [], b"")


class LockRuleTests(TestCase):
    """The rules of z4node.objects.lock on their own."""

    def test_removal(self):
        now = 1000.0
        free = version({})
        lock.check_removable(free, now)
        governed = version({"retention": {"mode": "GOVERNANCE", "until": now + 1}})
        with self.assertRaises(ObjectError):
            lock.check_removable(governed, now)
        lock.check_removable(governed, now, bypass_governance=True)
        lock.check_removable(governed, now + 1)  # not a second longer
        complied = version({"retention": {"mode": "COMPLIANCE", "until": now + 1}})
        with self.assertRaises(ObjectError):
            lock.check_removable(complied, now, bypass_governance=True)
        held = version({"legal_hold": True})
        with self.assertRaises(ObjectError):
            lock.check_removable(held, now, bypass_governance=True)
        lock.check_removable(version({"legal_hold": False}), now)

    def test_retention_changes(self):
        now = 1000.0
        complied = version({"retention": {"mode": "COMPLIANCE", "until": now + 10}})
        lock.check_retention_change(complied, ("COMPLIANCE", now + 20), now)
        for weaker in (("COMPLIANCE", now + 5), ("GOVERNANCE", now + 20), None):
            with self.assertRaises(ObjectError):
                lock.check_retention_change(complied, weaker, now, bypass_governance=True)
        governed = version({"retention": {"mode": "GOVERNANCE", "until": now + 10}})
        lock.check_retention_change(governed, ("COMPLIANCE", now + 10), now)
        lock.check_retention_change(governed, ("GOVERNANCE", now + 11), now)
        for weaker in (("GOVERNANCE", now + 5), None):
            with self.assertRaises(ObjectError):
                lock.check_retention_change(governed, weaker, now)
            lock.check_retention_change(governed, weaker, now, bypass_governance=True)
        # A retention that has passed can be changed at will.
        lock.check_retention_change(complied, None, now + 10)


class ObjectLockTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()

    def error(self, call, **kwargs):
        with self.assertRaises(ClientError) as raised:
            call(**kwargs)
        response = raised.exception.response
        return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]

    def locked_bucket(self, name="locked"):
        self.s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        return name

    def test_lock_bucket_is_versioned_for_good(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        self.assertEqual(s3.get_bucket_versioning(Bucket=bucket)["Status"], "Enabled")
        self.assertEqual(s3.get_object_lock_configuration(Bucket=bucket)
                         ["ObjectLockConfiguration"], {"ObjectLockEnabled": "Enabled"})
        self.assertEqual(self.error(s3.put_bucket_versioning, Bucket=bucket,
                                    VersioningConfiguration={"Status": "Suspended"}),
                         (409, "InvalidBucketState"))
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def test_configuration_and_its_errors(self):
        s3 = self.s3
        s3.create_bucket(Bucket="plain")
        self.assertEqual(self.error(s3.get_object_lock_configuration, Bucket="plain"),
                         (404, "ObjectLockConfigurationNotFoundError"))
        rule = {"ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
        self.assertEqual(self.error(s3.put_object_lock_configuration, Bucket="plain",
                                    ObjectLockConfiguration=rule), (409, "InvalidBucketState"))
        # A versioned bucket may have Object Lock turned on later.
        s3.put_bucket_versioning(Bucket="plain", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object_lock_configuration(Bucket="plain", ObjectLockConfiguration=rule)
        self.assertEqual(s3.get_object_lock_configuration(Bucket="plain")
                         ["ObjectLockConfiguration"], rule)
        bucket = self.locked_bucket()
        for retention, expected in (
                ({"Mode": "GOVERNANCE", "Days": 1, "Years": 1}, (400, "MalformedXML")),
                ({"Mode": "GOVERNANCE", "Days": 0}, (400, "InvalidRetentionPeriod")),
                ({"Mode": "GOVERNANCE", "Years": -1}, (400, "InvalidRetentionPeriod")),
                ({"Mode": "invalid", "Years": 1}, (400, "MalformedXML"))):
            self.assertEqual(self.error(s3.put_object_lock_configuration, Bucket=bucket,
                                        ObjectLockConfiguration={
                                            "ObjectLockEnabled": "Enabled",
                                            "Rule": {"DefaultRetention": retention}}),
                             expected, retention)
        self.assertEqual(self.error(s3.put_object_lock_configuration, Bucket=bucket,
                                    ObjectLockConfiguration={"ObjectLockEnabled": "Disabled"}),
                         (400, "MalformedXML"))

    def test_default_retention_applies_to_new_versions(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        before = time.time()
        version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
        head = s3.head_object(Bucket=bucket, Key="k")
        self.assertEqual(head["ObjectLockMode"], "GOVERNANCE")
        until = head["ObjectLockRetainUntilDate"].timestamp()
        self.assertTrue(before + 86400 - 2 <= until <= time.time() + 86400 + 1)
        self.assertEqual(self.error(s3.delete_object, Bucket=bucket, Key="k",
                                    VersionId=version), (403, "AccessDenied"))
        # A delete marker is always allowed: it hides, it does not remove.
        self.assertTrue(s3.delete_object(Bucket=bucket, Key="k")["DeleteMarker"])
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version,
                         BypassGovernanceRetention=True)
        # A copy takes the destination bucket's default, not the source's lock.
        s3.create_bucket(Bucket="plain")
        s3.put_object(Bucket=bucket, Key="src", Body=b"x")
        s3.copy_object(Bucket="plain", Key="copy", CopySource=f"{bucket}/src")
        self.assertNotIn("ObjectLockMode", s3.head_object(Bucket="plain", Key="copy"))
        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                              Body=b"part", ContentMD5=md5_of(b"part"))["ETag"]
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1,
                                                                 "ETag": etag}]})
        self.assertEqual(s3.head_object(Bucket=bucket, Key="mp")["ObjectLockMode"],
                         "GOVERNANCE")

    def test_retention_rules(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
        self.assertEqual(self.error(s3.get_object_retention, Bucket=bucket, Key="k"),
                         (404, "NoSuchObjectLockConfiguration"))
        far, farther = in_days(10).replace(microsecond=0), in_days(20).replace(microsecond=0)
        s3.put_object_retention(Bucket=bucket, Key="k",
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": farther})
        got = s3.get_object_retention(Bucket=bucket, Key="k", VersionId=version)["Retention"]
        self.assertEqual((got["Mode"], got["RetainUntilDate"]), ("GOVERNANCE", farther))
        shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": far}
        self.assertEqual(self.error(s3.put_object_retention, Bucket=bucket, Key="k",
                                    Retention=shorter), (403, "AccessDenied"))
        s3.put_object_retention(Bucket=bucket, Key="k", Retention=shorter,
                                BypassGovernanceRetention=True)
        # GOVERNANCE may become COMPLIANCE; COMPLIANCE never weakens, bypass or not.
        s3.put_object_retention(Bucket=bucket, Key="k",
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": far})
        for weaker in ({"Mode": "GOVERNANCE", "RetainUntilDate": farther},
                       {"Mode": "COMPLIANCE", "RetainUntilDate": in_days(5)}):
            self.assertEqual(self.error(s3.put_object_retention, Bucket=bucket, Key="k",
                                        Retention=weaker, BypassGovernanceRetention=True),
                             (403, "AccessDenied"))
        self.assertEqual(self.error(s3.delete_object, Bucket=bucket, Key="k",
                                    VersionId=version, BypassGovernanceRetention=True),
                         (403, "AccessDenied"))
        self.assertEqual(self.error(s3.put_object_retention, Bucket=bucket, Key="k",
                                    Retention={"Mode": "invalid", "RetainUntilDate": far}),
                         (400, "MalformedXML"))
        self.assertEqual(self.error(s3.put_object_retention, Bucket=bucket, Key="k",
                                    Retention={"Mode": "COMPLIANCE",
                                               "RetainUntilDate": in_days(-1)}),
                         (400, "InvalidArgument"))
        s3.create_bucket(Bucket="plain")
        s3.put_object(Bucket="plain", Key="k", Body=b"x")
        self.assertEqual(self.error(s3.put_object_retention, Bucket="plain", Key="k",
                                    Retention=shorter), (400, "InvalidRequest"))
        self.assertEqual(self.error(s3.get_object_retention, Bucket="plain", Key="k"),
                         (400, "InvalidRequest"))

    def test_bypass_needs_the_right_to_bypass(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        code, out, err = self.node.z4("--json", "key", "create", "writer")
        self.assertEqual(code, 0, err)
        created = json.loads(out)
        code, _, err = self.node.z4("bucket", "allow", bucket, "--key", "writer", "--read",
                                    "--write")
        self.assertEqual(code, 0, err)
        writer = self.node.client((created["access_key_id"], created["secret_access_key"]))
        version = writer.put_object(
            Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=in_days(1))["VersionId"]
        self.assertEqual(self.error(writer.delete_object, Bucket=bucket, Key="k",
                                    VersionId=version, BypassGovernanceRetention=True),
                         (403, "AccessDenied"))
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version,
                         BypassGovernanceRetention=True)

    def test_legal_hold(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        version = s3.put_object(Bucket=bucket, Key="k", Body=b"x",
                                ObjectLockLegalHoldStatus="ON")["VersionId"]
        self.assertEqual(s3.head_object(Bucket=bucket, Key="k")["ObjectLockLegalHoldStatus"],
                         "ON")
        self.assertEqual(s3.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"],
                         {"Status": "ON"})
        self.assertEqual(self.error(s3.delete_object, Bucket=bucket, Key="k",
                                    VersionId=version, BypassGovernanceRetention=True),
                         (403, "AccessDenied"))
        self.assertEqual(self.error(s3.put_object_legal_hold, Bucket=bucket, Key="k",
                                    LegalHold={"Status": "abc"}), (400, "MalformedXML"))
        s3.put_object_legal_hold(Bucket=bucket, Key="k", VersionId=version,
                                 LegalHold={"Status": "OFF"})
        self.assertEqual(s3.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"],
                         {"Status": "OFF"})
        s3.delete_object(Bucket=bucket, Key="k", VersionId=version)
        plain = s3.put_object(Bucket=bucket, Key="p", Body=b"x")["VersionId"]
        self.assertEqual(self.error(s3.get_object_legal_hold, Bucket=bucket, Key="p",
                                    VersionId=plain), (404, "NoSuchObjectLockConfiguration"))
        s3.create_bucket(Bucket="plain")
        self.assertEqual(self.error(s3.put_object, Bucket="plain", Key="k", Body=b"x",
                                    ObjectLockLegalHoldStatus="ON"), (400, "InvalidRequest"))

    def test_lock_headers_are_checked(self):
        s3 = self.s3
        bucket = self.locked_bucket()
        self.assertEqual(self.error(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                                    ObjectLockMode="COMPLIANCE"), (400, "InvalidArgument"))
        self.assertEqual(self.error(s3.put_object, Bucket=bucket, Key="k", Body=b"x",
                                    ObjectLockMode="COMPLIANCE",
                                    ObjectLockRetainUntilDate=in_days(-1)),
                         (400, "InvalidArgument"))

    def test_a_digest_is_required_for_locked_writes(self):
        """S3 refuses an upload Object Lock will protect without a digest of
        its body; a client that sends none (here, checksums off) is told so."""
        bucket = self.locked_bucket()
        bare = self.node.client(request_checksum_calculation="when_required")
        self.s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        self.assertEqual(self.error(bare.put_object, Bucket=bucket, Key="k", Body=b"x"),
                         (400, "InvalidRequest"))
        bare.put_object(Bucket=bucket, Key="k", Body=b"x", ContentMD5=md5_of(b"x"))

    def test_veeam_style_immutable_backups(self):
        """As Veeam writes an immutable backup: a lock-enabled bucket with no
        default, every block written with COMPLIANCE retention and
        Content-MD5, retention extended on later runs, expired versions
        swept with DeleteObjects by version id."""
        s3 = self.s3
        bucket = self.locked_bucket("veeam-repo")
        s3.put_object(Bucket=bucket, Key="Veeam/Archive/capabilities.xml", Body=b"<c/>")
        written = {}
        until = in_days(30).replace(microsecond=0)
        for index in range(5):
            key = f"Veeam/Backup/job/blocks/{index:04d}.blk"
            data = (b"block %d " % index) * 100
            response = s3.put_object(Bucket=bucket, Key=key, Body=data,
                                     ContentMD5=md5_of(data), ObjectLockMode="COMPLIANCE",
                                     ObjectLockRetainUntilDate=until)
            written[key] = response["VersionId"]
        for key, version in written.items():
            head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
            self.assertEqual((head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]),
                             ("COMPLIANCE", until))
        # A ransomware-style wipe: every version, every way, bypass included.
        result = s3.delete_objects(Bucket=bucket, BypassGovernanceRetention=True, Delete={
            "Objects": [{"Key": k, "VersionId": v} for k, v in written.items()]})
        self.assertEqual({e["Code"] for e in result["Errors"]}, {"AccessDenied"})
        self.assertEqual(len(result["Errors"]), 5)
        overwrite = s3.put_object(Bucket=bucket, Key=next(iter(written)), Body=b"garbage")
        self.assertNotIn(overwrite["VersionId"], written.values())
        for key, version in written.items():
            self.assertEqual(self.error(s3.put_object_retention, Bucket=bucket, Key=key,
                                        VersionId=version, BypassGovernanceRetention=True,
                                        Retention={"Mode": "GOVERNANCE",
                                                   "RetainUntilDate": until}),
                             (403, "AccessDenied"))
            body = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
            self.assertTrue(body.startswith(b"block"))
        # The next backup run extends the retention of the blocks it reuses.
        later = in_days(60).replace(microsecond=0)
        for key, version in written.items():
            s3.put_object_retention(Bucket=bucket, Key=key, VersionId=version,
                                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
            self.assertEqual(s3.get_object_retention(Bucket=bucket, Key=key, VersionId=version)
                             ["Retention"]["RetainUntilDate"], later)
        # Retention that has passed lets the repository clean up.
        short = s3.put_object(Bucket=bucket, Key="Veeam/tmp", Body=b"t",
                              ContentMD5=md5_of(b"t"), ObjectLockMode="COMPLIANCE",
                              ObjectLockRetainUntilDate=datetime.now(timezone.utc)
                              + timedelta(seconds=2))["VersionId"]
        self.assertEqual(self.error(s3.delete_object, Bucket=bucket, Key="Veeam/tmp",
                                    VersionId=short), (403, "AccessDenied"))
        time.sleep(2.5)
        result = s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": "Veeam/tmp", "VersionId": short}]})
        self.assertEqual([d["VersionId"] for d in result["Deleted"]], [short])

    def test_aws_cli(self):
        node = self.node
        node.aws("s3api", "create-bucket", "--bucket", "cli-lock",
                 "--object-lock-enabled-for-bucket")
        node.aws("s3api", "put-object-lock-configuration", "--bucket", "cli-lock",
                 "--object-lock-configuration",
                 '{"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": '
                 '{"Mode": "GOVERNANCE", "Days": 1}}}')
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"backup")
        put = json.loads(node.aws(
            "s3api", "put-object", "--bucket", "cli-lock", "--key", "b", "--body", path,
            "--object-lock-mode", "COMPLIANCE",
            "--object-lock-retain-until-date", "2099-01-01T00:00:00Z").stdout)
        retention = json.loads(node.aws("s3api", "get-object-retention", "--bucket",
                                        "cli-lock", "--key", "b").stdout)["Retention"]
        self.assertEqual(retention["Mode"], "COMPLIANCE")
        self.assertTrue(retention["RetainUntilDate"].startswith("2099-01-01T00:00:00"))
        refused = node.aws("s3api", "delete-object", "--bucket", "cli-lock", "--key", "b",
                           "--version-id", put["VersionId"], "--bypass-governance-retention",
                           check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("AccessDenied", refused.stderr)
