"""Lifecycle: the rules and the worker on a fake clock (objects, versions,
delete markers and uploads go exactly when due, not a second earlier;
passes resume after a restart), the configuration's S3 errors through
boto3, and a real node with the test-only short day."""

import json
import os
import time
from datetime import datetime, timezone

from botocore.exceptions import ClientError
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from tests.test_storage import body_of
from z4node.hlc import HybridLogicalClock
from z4node.objects import lifecycle, versioning
from z4node.objects.errors import ObjectError
from z4node.objects.lifecycle import DAY_SECONDS, LifecycleWorker, Rule, due_after
from z4node.objects.service import ObjectService
from z4node.objects.system import SystemTables
from z4node.storage.chunks import ChunkStore
from z4node.storage.meta import MetaStore

# 2024-01-01 10:30:00 UTC: objects written now expire at midnights.
START = datetime(2024, 1, 1, 10, 30, tzinfo=timezone.utc).timestamp()
JAN = {day: datetime(2024, 1, day, tzinfo=timezone.utc).timestamp() for day in range(1, 32)}


def rule(rule_id="r", **fields):
    return Rule(rule_id, **fields).to_dict()


class DueTimeTests(TestCase):
    def test_days_round_up_to_the_next_midnight(self):
        self.assertEqual(due_after(START, 1, DAY_SECONDS), JAN[3])
        self.assertEqual(due_after(JAN[2], 1, DAY_SECONDS), JAN[3])
        self.assertEqual(due_after(JAN[2] + 1, 30, DAY_SECONDS), JAN[3] + 30 * DAY_SECONDS)
        self.assertEqual(due_after(25, 1, 10), 40)

    def test_filters(self):
        r = Rule("r", prefix="logs/", tags={"a": "1"}, size_greater_than=10,
                 size_less_than=100)
        self.assertTrue(r.matches("logs/x", 50, {"a": "1", "b": "2"}))
        self.assertFalse(r.matches("data/x", 50, {"a": "1"}))
        self.assertFalse(r.matches("logs/x", 50, {"a": "2"}))
        self.assertFalse(r.matches("logs/x", 10, {"a": "1"}))
        self.assertFalse(r.matches("logs/x", 100, {"a": "1"}))


class FakeClockNode:
    """The object layer with time on a fake clock (SQLite and chunk I/O
    still on real threads)."""

    def __init__(self, directory, clock):
        self.clock = clock
        self.meta = MetaStore(reactor, os.path.join(directory, "meta.sqlite3"))
        self.chunks = ChunkStore(reactor, os.path.join(directory, "chunks"))
        self.hlc = HybridLogicalClock(clock)
        self.system = SystemTables(self.meta, self.hlc, clock)
        self.objects = ObjectService(clock, self.meta, self.chunks, self.system, self.hlc)
        self.meta.start()
        self.chunks.start()

    async def open(self):
        await self.system.load()
        self.key = self.system.key_by_name("admin") or await self.system.create_key(
            "admin", is_admin=True)
        return self

    def close(self):
        self.chunks.stop()
        self.meta.stop()

    def worker(self, **kwargs):
        kwargs.setdefault("timer", lambda: 0.0)
        return LifecycleWorker(self.clock, self.objects, self.meta, **kwargs)

    async def bucket(self, name, rules, status=None, lock=False):
        await self.objects.create_bucket(name, self.key, object_lock=lock)
        if status:
            await self.objects.set_versioning(name, status)
        await self.objects.set_bucket_setting(name, "lifecycle", rules)

    async def put(self, bucket, key, data=b"x", meta=None):
        return await self.objects.put_object(bucket, key, body_of(data),
                                             owner=self.key.user_id, meta=meta or {})

    async def keys(self, bucket):
        items, _ = await self.objects.list_objects(bucket, "", "", None, 1000)
        return [i.key for i in items]

    async def versions(self, bucket):
        items, _ = await self.objects.list_versions(bucket, "", "", None, None, 1000)
        return [(v.key, v.version_id, v.delete_marker) for v, _ in items]


class WorkerTests(TestCase):
    def node(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.clock = Clock()
        self.clock.advance(START)
        node = FakeClockNode(directory, self.clock)
        self.addCleanup(node.close)
        return node.open()

    def at(self, when):
        self.clock.advance(when - self.clock.seconds())

    async def test_current_versions_expire_at_midnight_not_a_second_earlier(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)])
        await node.put("bkt", "k")
        worker = node.worker()
        self.at(JAN[3] - 1)
        self.assertEqual(await worker.run_pass(), [])
        self.assertEqual(await node.keys("bkt"), ["k"])
        self.at(JAN[3])
        done = await worker.run_pass()
        self.assertEqual([(a.kind, a.key) for a in done], [("expire", "k")])
        self.assertEqual(await node.keys("bkt"), [])
        # A never-versioned bucket keeps no version of it.
        self.assertEqual([v[2] for v in await node.versions("bkt")], [True])

    async def test_expiration_by_date(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_date=JAN[10])])
        await node.put("bkt", "k")
        worker = node.worker()
        self.at(JAN[10] - 1)
        await worker.run_pass()
        self.assertEqual(await node.keys("bkt"), ["k"])
        self.at(JAN[10])
        await worker.run_pass()
        self.assertEqual(await node.keys("bkt"), [])

    async def test_versioned_expiry_then_noncurrent_then_lone_marker(self):
        node = await self.node()
        await node.bucket("bkt", [
            rule("markers", expired_object_delete_marker=True),
            rule("current", expiration_days=1),
            rule("old", noncurrent_days=2)],
            status=versioning.ENABLED)
        first = await node.put("bkt", "k")
        worker = node.worker()
        self.at(JAN[3])
        await worker.run_pass()
        versions = await node.versions("bkt")
        self.assertEqual([(v[1] == first.version_id, v[2]) for v in versions],
                         [(False, True), (True, False)])
        # Noncurrent since JAN[3] 00:00 (the marker's write): due JAN[5].
        self.at(JAN[5] - 1)
        await worker.run_pass()
        self.assertEqual(len(await node.versions("bkt")), 2)
        self.at(JAN[5])
        done = await worker.run_pass()
        # The marker is expired once the version behind it goes: the same
        # pass removes it, after that version.
        self.assertEqual([(a.kind, a.rule_id) for a in done],
                         [("remove", "old"), ("remove", "markers")])
        self.assertEqual(await node.versions("bkt"), [])

    async def test_a_marker_stays_while_a_version_behind_it_stays(self):
        node = await self.node()
        await node.bucket("bkt", [rule("markers", expired_object_delete_marker=True),
                                  rule("old", noncurrent_days=1)],
                          status=versioning.ENABLED)
        await node.put("bkt", "k")
        await node.objects.delete_object("bkt", "k", "o")
        self.at(JAN[10])
        worker = node.worker()
        real_delete = node.objects.delete_object

        async def changed_meanwhile(*args, only_noncurrent=False, **kwargs):
            if only_noncurrent:
                raise ObjectError("PreconditionFailed")
            return await real_delete(*args, only_noncurrent=only_noncurrent, **kwargs)
        node.objects.delete_object = changed_meanwhile
        self.assertEqual(await worker.run_pass(), [])
        # Removing the marker would have made the old version current again.
        self.assertEqual([v[2] for v in await node.versions("bkt")], [True, False])
        self.assertEqual(worker.totals["skipped"], 2)
        node.objects.delete_object = real_delete
        done = await worker.run_pass()
        self.assertEqual([a.rule_id for a in done], ["old", "markers"])
        self.assertEqual(await node.versions("bkt"), [])

    async def test_a_days_rule_removes_lone_markers_once_old_enough(self):
        node = await self.node()
        await node.bucket("bkt", [rule("current", expiration_days=2)],
                          status=versioning.ENABLED)
        version = await node.put("bkt", "k")
        await node.objects.delete_object("bkt", "k", "o")
        await node.objects.delete_object("bkt", "k", "o", version_id=version.version_id)
        worker = node.worker()
        self.at(JAN[4] - 1)
        await worker.run_pass()
        self.assertEqual(len(await node.versions("bkt")), 1)
        self.at(JAN[4])
        done = await worker.run_pass()
        self.assertEqual([(a.kind, a.rule_id) for a in done], [("remove", "current")])

    async def test_a_version_that_became_current_is_not_removed_as_noncurrent(self):
        node = await self.node()
        await node.bucket("bkt", [rule(noncurrent_days=1)], status=versioning.ENABLED)
        old = await node.put("bkt", "k", b"old")
        new = await node.put("bkt", "k", b"new")
        self.at(JAN[10])
        worker = node.worker()
        rules = lifecycle.rules_of(node.system.bucket("bkt"))
        batch = await node.meta.versions_of_keys("bkt", None, 10)
        actions = lifecycle.plan_key(rules, "bkt", "k", batch[0][1], self.clock.seconds(),
                                     DAY_SECONDS)
        self.assertEqual([(a.kind, a.version.version_id) for a in actions],
                         [("remove", old.version_id)])
        # Meanwhile a client removes the newest version: the old one is current.
        await node.objects.delete_object("bkt", "k", "o", version_id=new.version_id)
        done = []
        await worker._apply(actions[0], done)
        self.assertEqual([v[1] for v in await node.versions("bkt")], [old.version_id])

    async def test_newer_noncurrent_versions_are_kept(self):
        node = await self.node()
        await node.bucket("bkt", [rule(noncurrent_days=1, newer_noncurrent_versions=2)],
                          status=versioning.ENABLED)
        written = []
        for _ in range(5):
            written.append((await node.put("bkt", "k")).version_id)
            self.clock.advance(60)
        self.at(JAN[10])
        await node.worker().run_pass()
        self.assertEqual([v[1] for v in await node.versions("bkt")],
                         list(reversed(written))[:3])

    async def test_suspended_bucket_expiry_replaces_the_null_version(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)], status=versioning.ENABLED)
        kept = await node.put("bkt", "k")
        await node.objects.set_versioning("bkt", versioning.SUSPENDED)
        await node.put("bkt", "k")
        self.at(JAN[3])
        await node.worker().run_pass()
        self.assertEqual(await node.versions("bkt"),
                         [("k", "null", True), ("k", kept.version_id, False)])

    async def test_filters_choose_what_expires(self):
        node = await self.node()
        await node.bucket("bkt", [
            rule("logs", prefix="logs/", expiration_days=1),
            rule("tagged", tags={"tmp": "yes"}, filter_style="tag", expiration_days=1),
            rule("big", size_greater_than=10, filter_style="size_greater_than",
                 expiration_days=1),
            rule("off", enabled=False, expiration_days=1)])
        await node.put("bkt", "logs/a")
        await node.put("bkt", "data/tagged", meta={"tags": {"tmp": "yes"}})
        await node.put("bkt", "data/other-tag", meta={"tags": {"tmp": "no"}})
        await node.put("bkt", "data/big", b"x" * 11)
        await node.put("bkt", "data/small", b"x" * 10)
        self.at(JAN[3])
        await node.worker().run_pass()
        self.assertEqual(await node.keys("bkt"), ["data/other-tag", "data/small"])

    async def test_incomplete_uploads_are_aborted_when_due(self):
        node = await self.node()
        await node.bucket("bkt", [rule(abort_upload_days=2, prefix="up/")])
        upload = await node.objects.create_upload("bkt", "up/file", owner="o", meta={})
        other = await node.objects.create_upload("bkt", "keep/file", owner="o", meta={})
        worker = node.worker()
        self.at(JAN[4] - 1)
        await worker.run_pass()
        await node.objects.get_upload("bkt", "up/file", upload.upload_id)
        self.at(JAN[4])
        done = await worker.run_pass()
        self.assertEqual([a.kind for a in done], ["abort"])
        with self.assertRaises(ObjectError):
            await node.objects.get_upload("bkt", "up/file", upload.upload_id)
        await node.objects.get_upload("bkt", "keep/file", other.upload_id)

    async def test_locked_versions_are_never_removed(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1, noncurrent_days=1)], lock=True)
        until = JAN[20]
        locked = await node.put("bkt", "k", meta={"retention": {"mode": "COMPLIANCE",
                                                              "until": until}})
        held = await node.put("bkt", "h", meta={"legal_hold": True})
        self.at(JAN[10])
        worker = node.worker()
        await worker.run_pass()  # current versions get markers
        await worker.run_pass()
        remaining = {v[1] for v in await node.versions("bkt")}
        self.assertIn(locked.version_id, remaining)
        self.assertIn(held.version_id, remaining)
        self.at(until)
        await worker.run_pass()
        remaining = {v[1] for v in await node.versions("bkt")}
        self.assertNotIn(locked.version_id, remaining)
        self.assertIn(held.version_id, remaining)

    async def test_dry_run_changes_nothing(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)])
        await node.put("bkt", "k")
        self.at(JAN[3])
        done = await node.worker(dry_run=True).run_pass()
        self.assertEqual([(a.kind, a.key) for a in done], [("expire", "k")])
        self.assertEqual(await node.keys("bkt"), ["k"])

    async def test_a_pass_interrupted_by_a_restart_resumes_where_it_was(self):
        node = await self.node()
        await node.bucket("a-bucket", [rule(expiration_days=1)])
        await node.bucket("b-bucket", [rule(expiration_days=1)])
        for key in ("k1", "k2", "k3", "k4", "k5"):
            await node.put("a-bucket", key)
            await node.put("b-bucket", key)
        self.at(JAN[3])
        worker = node.worker()
        worker.batch_keys = 2
        saves = []
        real_save = worker._save

        async def save_then_die(*args):
            await real_save(*args)
            saves.append(args)
            raise SystemExit("node stopped")
        worker._save = save_then_die
        with self.assertRaises(SystemExit):
            await worker.run_pass()
        self.assertEqual(await node.keys("a-bucket"), ["k3", "k4", "k5"])
        cursor = json.loads(await node.meta.get_setting(LifecycleWorker.CURSOR))
        self.assertEqual((cursor["bucket"], cursor["after"]), ("a-bucket", "k2"))
        # A key written before the cursor meanwhile waits for the next pass:
        # the resumed pass starts at the cursor, not from the beginning.
        await node.put("a-bucket", "k0")
        self.clock.advance(2 * DAY_SECONDS)
        restarted = node.worker()
        restarted.batch_keys = 2
        await restarted.run_pass()
        self.assertEqual(await node.keys("a-bucket"), ["k0"])
        self.assertEqual(await node.keys("b-bucket"), [])
        self.assertIsNone(await node.meta.get_setting(LifecycleWorker.CURSOR))
        await restarted.run_pass()
        self.assertEqual(await node.keys("a-bucket"), [])

    async def test_service_runs_on_its_interval_and_resumes_at_start(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)])
        await node.put("bkt", "k")
        worker = node.worker(interval_seconds=600)
        worker.startService()
        self.addCleanup(worker.stopService)
        self.at(JAN[3])
        self.assertEqual(worker.passes, 0)
        self.clock.advance(600)
        await worker._running
        self.assertEqual(worker.passes, 1)
        self.assertEqual(await node.keys("bkt"), [])
        await node.meta.set_setting(LifecycleWorker.CURSOR, json.dumps(
            {"started": 0, "bucket": "bkt", "phase": "uploads", "after": None}))
        again = node.worker(interval_seconds=600)
        again.startService()
        self.addCleanup(again.stopService)
        await again.checked_cursor
        self.clock.advance(again.resume_delay_seconds)
        await again._running
        self.assertEqual(again.passes, 1)

    async def test_a_failed_pass_does_not_stop_the_timer(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)])
        await node.put("bkt", "k")
        worker = node.worker(interval_seconds=600)
        failures = []

        async def broken(*args):
            failures.append(args)
            raise RuntimeError("disk on fire")
        real = worker._bucket
        worker._bucket = broken
        worker.startService()
        self.addCleanup(worker.stopService)
        self.at(JAN[3])
        self.clock.advance(600)
        await worker._running
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        worker._bucket = real
        self.clock.advance(600)
        await worker._running
        self.assertEqual(await node.keys("bkt"), [])

    async def test_worker_sleeps_between_batches_in_proportion(self):
        node = await self.node()
        await node.bucket("bkt", [rule(expiration_days=1)])
        for key in ("k1", "k2", "k3"):
            await node.put("bkt", key)
        ticks = iter(range(1000))
        worker = node.worker(timer=lambda: next(ticks) * 0.1)
        worker.batch_keys = 1
        self.at(JAN[3])
        d = worker.run_pass()
        for _ in range(50):
            if await node.keys("bkt") != ["k1", "k2", "k3"]:
                break
            await deferred_sleep(0.01)
        self.assertEqual(await node.keys("bkt"), ["k2", "k3"])  # sleeping after batch 1
        while not d.called:
            self.clock.advance(1)
            await deferred_sleep(0.01)
        self.assertEqual(await node.keys("bkt"), [])

    async def test_expiration_header_time(self):
        node = await self.node()
        await node.bucket("bkt", [rule("soon", expiration_days=3),
                                rule("later", expiration_days=5)])
        version = await node.put("bkt", "k")
        rules = lifecycle.rules_of(node.system.bucket("bkt"))
        self.assertEqual(lifecycle.current_expiration(rules, version, DAY_SECONDS),
                         (JAN[5], "soon"))


def deferred_sleep(seconds):
    return deferLater(reactor, seconds)


class LifecycleConfigurationTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="lcb")

    def error(self, rules):
        with self.assertRaises(ClientError) as raised:
            self.s3.put_bucket_lifecycle_configuration(
                Bucket="lcb", LifecycleConfiguration={"Rules": rules})
        response = raised.exception.response
        return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]

    def test_put_get_delete(self):
        s3 = self.s3
        with self.assertRaises(ClientError) as raised:
            s3.get_bucket_lifecycle_configuration(Bucket="lcb")
        self.assertEqual(raised.exception.response["Error"]["Code"],
                         "NoSuchLifecycleConfiguration")
        rules = [
            {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
             "Expiration": {"Days": 30},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 7,
                                             "NewerNoncurrentVersions": 3},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
            {"ID": "tmp", "Filter": {"And": {"Prefix": "tmp/", "Tags": [
                {"Key": "kind", "Value": "scratch"}], "ObjectSizeGreaterThan": 100}},
             "Status": "Disabled",
             "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=timezone.utc)}},
            {"ID": "markers", "Filter": {}, "Status": "Enabled",
             "Expiration": {"ExpiredObjectDeleteMarker": True}},
            {"ID": "tag", "Filter": {"Tag": {"Key": "a", "Value": "b"}}, "Status": "Enabled",
             "Expiration": {"Days": 1}},
        ]
        s3.put_bucket_lifecycle_configuration(Bucket="lcb",
                                              LifecycleConfiguration={"Rules": rules})
        self.assertEqual(s3.get_bucket_lifecycle_configuration(Bucket="lcb")["Rules"], rules)
        s3.delete_bucket_lifecycle(Bucket="lcb")
        with self.assertRaises(ClientError):
            s3.get_bucket_lifecycle_configuration(Bucket="lcb")

    def test_aws_errors(self):
        def one(**fields):
            base = {"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled"}
            base.update(fields)
            return [base]
        self.assertEqual(self.error(one(Expiration={"Days": 0})), (400, "InvalidArgument"))
        self.assertEqual(self.error(one(Status="enabled", Expiration={"Days": 1})),
                         (400, "MalformedXML"))
        self.assertEqual(self.error(one(ID="x" * 256, Expiration={"Days": 1})),
                         (400, "InvalidArgument"))
        self.assertEqual(self.error(one(Expiration={"Days": 1}) + one(Expiration={"Days": 2})),
                         (400, "InvalidArgument"))
        self.assertEqual(self.error(one(Expiration={
            "Date": datetime(2030, 1, 1, 12, tzinfo=timezone.utc)})), (400, "InvalidArgument"))
        self.assertEqual(self.error(one(Expiration={"Days": 1,
                                                    "ExpiredObjectDeleteMarker": True})),
                         (400, "MalformedXML"))
        self.assertEqual(self.error(one()), (400, "InvalidRequest"))
        self.assertEqual(self.error(one(Filter={"Tag": {"Key": "a", "Value": "b"}},
                                        AbortIncompleteMultipartUpload={
                                            "DaysAfterInitiation": 1})),
                         (400, "InvalidRequest"))
        self.assertEqual(self.error(one(NoncurrentVersionExpiration={"NoncurrentDays": 0})),
                         (400, "InvalidArgument"))
        # The node has one storage class: a transition names one it lacks.
        self.assertEqual(self.error(one(Transitions=[{"Days": 1,
                                                      "StorageClass": "GLACIER"}])),
                         (400, "InvalidStorageClass"))
        self.assertEqual(self.error(one(NoncurrentVersionTransitions=[{
            "NoncurrentDays": 1, "StorageClass": "STANDARD_IA"}])),
            (400, "InvalidStorageClass"))

    def test_aws_cli(self):
        path = os.path.join(self.mktemp())
        with open(path, "w") as f:
            json.dump({"Rules": [{"ID": "expire-logs", "Filter": {"Prefix": "logs/"},
                                  "Status": "Enabled", "Expiration": {"Days": 7}}]}, f)
        self.node.aws("s3api", "put-bucket-lifecycle-configuration", "--bucket", "lcb",
                      "--lifecycle-configuration", f"file://{path}")
        got = json.loads(self.node.aws("s3api", "get-bucket-lifecycle-configuration",
                                       "--bucket", "lcb").stdout)
        self.assertEqual(got["Rules"][0]["ID"], "expire-logs")
        self.s3.put_object(Bucket="lcb", Key="logs/today", Body=b"x")
        head = json.loads(self.node.aws("s3api", "head-object", "--bucket", "lcb", "--key",
                                        "logs/today").stdout)
        self.assertIn('rule-id="expire-logs"', head["Expiration"])
        self.assertNotIn("Expiration", self.s3.put_object(Bucket="lcb", Key="other", Body=b"x"))


class LifecycleProcessTests(TestCase):
    """A real node whose lifecycle day lasts 2 s (test-only setting)."""

    day = 2

    def test_rules_act_on_a_real_node(self):
        node = NodeProcess(self, env={"Z4_LIFECYCLE_TEST_DAY_SECONDS": str(self.day)}).start()
        s3 = node.client()
        s3.create_bucket(Bucket="short")
        s3.put_bucket_versioning(Bucket="short", VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_lifecycle_configuration(Bucket="short", LifecycleConfiguration={"Rules": [
            {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
             "Expiration": {"Days": 1}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            {"ID": "markers", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
             "Expiration": {"ExpiredObjectDeleteMarker": True}}]})
        put = s3.put_object(Bucket="short", Key="tmp/a", Body=b"x")
        self.assertIn('rule-id="tmp"', put["Expiration"])
        expiry = s3.head_object(Bucket="short", Key="tmp/a")["Expiration"]
        self.assertIn("expiry-date=", expiry)
        s3.put_object(Bucket="short", Key="keep/b", Body=b"x")
        s3.create_multipart_upload(Bucket="short", Key="tmp/upload")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = s3.list_object_versions(Bucket="short")
            uploads = s3.list_multipart_uploads(Bucket="short").get("Uploads", [])
            keys = [v["Key"] for v in listing.get("Versions", []) + listing.get(
                "DeleteMarkers", [])]
            if keys == ["keep/b"] and not uploads:
                break
            time.sleep(0.5)
        self.assertEqual(keys, ["keep/b"], node.log())
        self.assertEqual(uploads, [])
        self.assertIn("test-only", node.log())

    def test_dry_run_deletes_nothing(self):
        node = NodeProcess(self, env={"Z4_LIFECYCLE_TEST_DAY_SECONDS": "1"},
                           args=["--lifecycle-dry-run"]).start()
        s3 = node.client()
        s3.create_bucket(Bucket="dry")
        s3.put_bucket_lifecycle_configuration(Bucket="dry", LifecycleConfiguration={"Rules": [
            {"ID": "all", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
        s3.put_object(Bucket="dry", Key="k", Body=b"x")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "would expire dry/k" not in node.log():
            time.sleep(0.5)
        self.assertIn("would expire dry/k", node.log())
        self.assertEqual(s3.get_object(Bucket="dry", Key="k")["Body"].read(), b"x")

    def test_size_and_and_filters_newer_noncurrent_and_markers_on_a_real_node(self):
        node = NodeProcess(self, env={"Z4_LIFECYCLE_TEST_DAY_SECONDS": str(self.day)}).start()
        s3 = node.client()
        s3.create_bucket(Bucket="full")
        s3.put_bucket_versioning(Bucket="full", VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_lifecycle_configuration(Bucket="full", LifecycleConfiguration={"Rules": [
            {"ID": "big-scratch", "Status": "Enabled", "Expiration": {"Days": 1},
             "Filter": {"And": {"Prefix": "big/", "ObjectSizeGreaterThan": 10,
                                "Tags": [{"Key": "kind", "Value": "scratch"}]}}},
            {"ID": "keep-one", "Filter": {"Prefix": "v/"}, "Status": "Enabled",
             "NoncurrentVersionExpiration": {"NoncurrentDays": 1,
                                             "NewerNoncurrentVersions": 1}},
            {"ID": "markers", "Filter": {"Prefix": "m/"}, "Status": "Enabled",
             "Expiration": {"ExpiredObjectDeleteMarker": True},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
        s3.put_object(Bucket="full", Key="big/a", Body=b"x" * 20, Tagging="kind=scratch")
        s3.put_object(Bucket="full", Key="big/small", Body=b"x" * 5, Tagging="kind=scratch")
        s3.put_object(Bucket="full", Key="big/untagged", Body=b"x" * 20)
        kept = [s3.put_object(Bucket="full", Key="v/k", Body=b"%d" % i)["VersionId"]
                for i in range(3)][1:]
        s3.put_object(Bucket="full", Key="m/k", Body=b"x")
        s3.delete_object(Bucket="full", Key="m/k")

        def state():
            listing = s3.list_object_versions(Bucket="full")
            return (sorted(v["Key"] for v in listing.get("Versions", [])
                           if v["IsLatest"]),
                    sorted(m["Key"] for m in listing.get("DeleteMarkers", [])),
                    sorted(v["VersionId"] for v in listing.get("Versions", [])
                           if v["Key"] == "v/k"))
        expected = (["big/small", "big/untagged", "v/k"], ["big/a"], sorted(kept))
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and state() != expected:
            time.sleep(0.5)
        self.assertEqual(state(), expected, node.log())
