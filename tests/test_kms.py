"""Tests for z4node.objects.kms: the KMS master key, named KMS keys stored
wrapped in the replicated system tables, and ``z4 kms key``."""

import base64
import hashlib
import json
import os
import random

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.nodeprocess import NodeProcess
from tests.test_cluster_processes import ClusterNode, eventually
from tests.test_everywhere import FakeNet
from tests.test_sse import ErrorAssertions, sse_c
from z4node.hlc import HybridLogicalClock
from z4node.objects.kms import KeyManager, KmsUnavailable, arn, master_key_from
from z4node.objects.system import AdminError, SystemTables
from z4node.storage.crypto import EncryptionKeyError
from z4node.storage.meta import MetaStore

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))


def run(d):
    return defer.ensureDeferred(d)


class MasterKeyTests(SynchronousTestCase):
    def test_from_the_environment_or_a_file(self):
        self.assertIsNone(master_key_from({}, {}))
        self.assertEqual(master_key_from({}, {"Z4_KMS_MASTER_KEY": MASTER.hex()}), MASTER)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(OTHER_MASTER.hex() + "\n")
        # The file wins over the environment.
        self.assertEqual(master_key_from({"kms-master-key-file": path},
                                         {"Z4_KMS_MASTER_KEY": MASTER.hex()}), OTHER_MASTER)

    def test_the_option_checks_its_file(self):
        from twisted.python import usage

        from z4node.tap import Options
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a key")
        for given in (path, path + ".missing"):
            with self.assertRaises(usage.UsageError) as raised:
                Options().parseOptions(["--kms-master-key-file", given])
            self.assertIn("--kms-master-key-file", str(raised.exception))
        with open(path, "w") as f:
            f.write(MASTER.hex())
        options = Options()
        options.parseOptions(["--kms-master-key-file", path])
        self.assertEqual(master_key_from(options, {}), MASTER)

    def test_a_malformed_key_is_refused_by_name(self):
        error = self.assertRaises(EncryptionKeyError, master_key_from, {},
                                  {"Z4_KMS_MASTER_KEY": "short"})
        self.assertIn("Z4_KMS_MASTER_KEY", str(error))


class KeyManagerTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNet(3)
        self.managers = {
            node: KeyManager(MASTER, self.net.system(node),
                             random_bytes=random.Random(node).randbytes)
            for node in ("n0", "n1", "n2")}

    def tearDown(self):
        for _, everywhere in self.net.nodes.values():
            everywhere.stopService()

    def test_a_key_made_on_one_node_opens_on_every_node(self):
        key = self.successResultOf(run(self.managers["n0"].create("photos")))
        material = self.managers["n0"].material(key)
        self.assertEqual(len(material), 32)
        # Stored wrapped: the record does not hold the material.
        self.assertNotIn(material.hex(), json.dumps(key.__dict__))
        for node in ("n1", "n2"):
            other = self.managers[node]
            found = other.find(key.key_id)
            self.assertEqual(other.material(found), material)
            for reference in (arn(key), "alias/photos",
                              "arn:aws:kms:us-east-1:000000000000:alias/photos"):
                self.assertEqual(other.find(reference), found)
        self.assertIsNone(self.managers["n1"].find("alias/nothing"))
        self.assertIsNone(self.managers["n1"].find("00000000-0000-4000-8000-000000000000"))

    def test_names_are_unique_and_checked(self):
        self.successResultOf(run(self.managers["n0"].create("photos")))
        failure = self.failureResultOf(run(self.managers["n1"].create("photos")), AdminError)
        self.assertIn("exists already", str(failure.value))
        self.failureResultOf(run(self.managers["n1"].create("bad name")), AdminError)

    def test_another_master_key_opens_nothing(self):
        key = self.successResultOf(run(self.managers["n0"].create("photos")))
        wrong = KeyManager(OTHER_MASTER, self.net.system("n1"))
        error = self.assertRaises(KmsUnavailable, wrong.material, key)
        self.assertIn("master key", str(error))
        self.assertFalse(wrong.summary(key)["usable"])

    def test_master_key_rotation_rewraps_kms_keys_only(self):
        key = self.successResultOf(run(self.managers["n0"].create("photos")))
        material = self.managers["n0"].material(key)
        rotating = KeyManager(OTHER_MASTER, self.net.system("n1"),
                              previous_master_key=MASTER)
        # The previous master key still opens it, until the rewrap.
        self.assertEqual(rotating.material(key), material)
        self.assertTrue(rotating.summary(key)["needs_rewrap"])
        self.assertEqual(self.successResultOf(run(rotating.rewrap())), ["photos"])
        self.assertEqual(self.successResultOf(run(rotating.rewrap())), [])
        new_only = KeyManager(OTHER_MASTER, self.net.system("n2"))
        rewrapped = self.net.system("n2").kms_key(key.key_id)
        self.assertNotEqual(rewrapped.wrapped, key.wrapped)
        # Same material: every object's data key still opens.
        self.assertEqual(new_only.material(rewrapped), material)
        self.assertRaises(KmsUnavailable, self.managers["n2"].material, rewrapped)

    def test_without_a_master_key_kms_is_off(self):
        off = KeyManager(None, self.net.system("n0"))
        self.assertFalse(off.enabled)
        failure = self.failureResultOf(run(off.create("photos")), KmsUnavailable)
        self.assertIn("Z4_KMS_MASTER_KEY", str(failure.value))


class StoredKeysTests(TestCase):
    """KMS keys survive a restart: saved in the metadata store, loaded back."""

    @defer.inlineCallbacks
    def test_saved_and_loaded(self):
        path = os.path.join(os.path.abspath(self.mktemp()))
        os.makedirs(path)
        meta = MetaStore(reactor, os.path.join(path, "meta.sqlite3"))
        meta.start()
        hlc = HybridLogicalClock(reactor)
        system = SystemTables(meta, hlc, reactor)
        yield run(system.load())
        key = yield run(KeyManager(MASTER, system).create("photos"))
        yield meta.stop()

        meta = MetaStore(reactor, os.path.join(path, "meta.sqlite3"))
        meta.start()
        self.addCleanup(meta.stop)
        again = SystemTables(meta, HybridLogicalClock(reactor), reactor)
        yield run(again.load())
        self.assertEqual(again.kms_key(key.key_id), key)
        self.assertEqual([k.name for k in again.kms_keys()], ["photos"])
        # The clock is seeded past the KMS key's timestamp too.
        self.assertGreaterEqual(again._hlc.now(), key.hlc)


class KmsCliTests(TestCase):
    def z4(self, node, *args):
        code, out, err = node.z4(*args)
        self.assertEqual(code, 0, f"z4 {' '.join(args)} failed: {err}")
        return out

    def test_create_list_info(self):
        node = NodeProcess(self, env={"Z4_KMS_MASTER_KEY": MASTER.hex()}).start()
        created = json.loads(self.z4(node, "kms", "key", "create", "photos", "--json"))
        self.assertEqual(created["name"], "photos")
        self.assertTrue(created["arn"].endswith(":key/" + created["key_id"]))
        self.assertTrue(created["usable"])
        self.assertIn("Key id: " + created["key_id"],
                      self.z4(node, "kms", "key", "info", "alias/photos"))
        listed = self.z4(node, "kms", "key", "list").splitlines()
        self.assertEqual(listed[0].split(), ["NAME", "KEY", "ID", "USABLE"])
        self.assertEqual(listed[1].split()[:2], ["photos", created["key_id"]])
        code, _, err = node.z4("kms", "key", "create", "photos")
        self.assertEqual(code, 1)
        self.assertIn("exists already", err)
        code, _, err = node.z4("kms", "key", "info", "nothing")
        self.assertEqual((code, "no KMS key" in err), (1, True), err)
        self.assertIn("none", self.z4(node, "kms", "rewrap"))

    def test_without_a_master_key_create_says_how_to_set_one(self):
        node = NodeProcess(self).start()
        code, _, err = node.z4("kms", "key", "create", "photos")
        self.assertEqual(code, 1)
        self.assertIn("Z4_KMS_MASTER_KEY", err)
        self.assertNotIn("Traceback", err)


KMS_ENV = {"Z4_KMS_MASTER_KEY": MASTER.hex()}
NODE_KEY_ENV = dict(KMS_ENV, Z4_ENCRYPTION_KEY="a1" * 32)
MiB = 1024 * 1024


def kms(key_id=None, **extra):
    args = {"ServerSideEncryption": "aws:kms", **extra}
    if key_id is not None:
        args["SSEKMSKeyId"] = key_id
    return args


class SseKmsCore(ErrorAssertions):
    """SSE-KMS through boto3 against a real node (TLS, so that SSE-C can
    be one side of a copy); run with and without a node key."""

    env = NODE_KEY_ENV

    def setUp(self):
        self.node = NodeProcess(self, env=self.env, tls=True).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")
        code, out, err = self.node.z4("kms", "key", "create", "photos", "--json")
        self.assertEqual(code, 0, err)
        self.key = json.loads(out)

    def encryption_of(self, response):
        return {name: response[name] for name in (
            "ServerSideEncryption", "SSEKMSKeyId", "SSECustomerAlgorithm",
            "BucketKeyEnabled") if name in response}

    def test_put_get_head_by_every_name_of_the_key(self):
        s3, arn_ = self.s3, self.key["arn"]
        expected = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn_}
        for name, reference in (("by-id", self.key["key_id"]), ("by-arn", arn_),
                                ("by-alias", "alias/photos")):
            body = os.urandom(6 * MiB) if name == "by-id" else name.encode() * 100
            put = s3.put_object(Bucket="bkt", Key=name, Body=body, **kms(reference))
            self.assertEqual(self.encryption_of(put), expected)
            self.assertNotEqual(put["ETag"].strip('"'), hashlib.md5(body).hexdigest())
            got = s3.get_object(Bucket="bkt", Key=name)
            self.assertEqual(got["Body"].read(), body)
            self.assertEqual(self.encryption_of(got), expected)
            head = s3.head_object(Bucket="bkt", Key=name)
            self.assertEqual(self.encryption_of(head), expected)
            ranged = s3.get_object(Bucket="bkt", Key=name, Range="bytes=5-9")
            self.assertEqual(ranged["Body"].read(), body[5:10])
        # No key named: the default key (alias/aws/s3), made on first use.
        put = s3.put_object(Bucket="bkt", Key="default", Body=b"d", **kms())
        self.assertNotEqual(put["SSEKMSKeyId"], arn_)
        self.assertEqual(put["SSEKMSKeyId"], s3.put_object(
            Bucket="bkt", Key="default2", Body=b"d", **kms("alias/aws/s3"))["SSEKMSKeyId"])
        # An encryption context and the bucket-key flag are kept and reported.
        context = base64.b64encode(json.dumps({"project": "x"}).encode()).decode()
        put = s3.put_object(Bucket="bkt", Key="ctx", Body=b"c",
                            **kms(arn_, SSEKMSEncryptionContext=context, BucketKeyEnabled=True))
        self.assertTrue(put["BucketKeyEnabled"])
        self.assertEqual(put["SSEKMSEncryptionContext"], context)
        self.assertEqual(s3.get_object(Bucket="bkt", Key="ctx")["Body"].read(), b"c")

    def test_refusals(self):
        s3 = self.s3
        error = self.assertS3Error("KMS.NotFoundException", 400, s3.put_object, Bucket="bkt",
                                   Key="k", Body=b"x",
                                   **kms("00000000-0000-4000-8000-000000000000"))
        self.assertIn("00000000-0000-4000-8000-000000000000", error["Error"]["Message"])
        self.assertS3Error("KMS.NotFoundException", 400, s3.put_object, Bucket="bkt",
                           Key="k", Body=b"x", **kms("alias/nothing"))
        self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt", Key="k",
                           Body=b"x", SSEKMSKeyId=self.key["key_id"])
        self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt", Key="k",
                           Body=b"x", **kms(SSEKMSEncryptionContext="not base64 json"))
        self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt", Key="k",
                           Body=b"x", **kms(), **sse_c())
        s3.put_object(Bucket="bkt", Key="sealed", Body=b"x", **kms(self.key["key_id"]))
        self.assertS3Error("InvalidRequest", 400, s3.get_object, Bucket="bkt",
                           Key="sealed", **sse_c())
        self.assertS3Error("NoSuchKey", 404, s3.get_object, Bucket="bkt", Key="k")

    def test_bucket_default_kms(self):
        s3 = self.s3
        s3.put_bucket_encryption(Bucket="bkt", ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/photos"},
                "BucketKeyEnabled": True}]})
        rule = s3.get_bucket_encryption(Bucket="bkt")["ServerSideEncryptionConfiguration"]
        self.assertEqual(rule["Rules"][0]["ApplyServerSideEncryptionByDefault"],
                         {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": self.key["arn"]})
        self.assertTrue(rule["Rules"][0]["BucketKeyEnabled"])
        put = s3.put_object(Bucket="bkt", Key="k", Body=b"by default")
        self.assertEqual(self.encryption_of(put), {
            "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.key["arn"],
            "BucketKeyEnabled": True})
        self.assertEqual(s3.get_object(Bucket="bkt", Key="k")["Body"].read(), b"by default")
        # A request's own encryption wins over the default.
        put = s3.put_object(Bucket="bkt", Key="c", Body=b"c", **sse_c())
        self.assertEqual(put["SSECustomerAlgorithm"], "AES256")
        self.assertS3Error("KMS.NotFoundException", 400, s3.put_bucket_encryption,
                           Bucket="bkt", ServerSideEncryptionConfiguration={"Rules": [{
                               "ApplyServerSideEncryptionByDefault": {
                                   "SSEAlgorithm": "aws:kms",
                                   "KMSMasterKeyID": "alias/nothing"}}]})

    def test_multipart(self):
        s3 = self.s3
        upload = s3.create_multipart_upload(Bucket="bkt", Key="mp",
                                            **kms(self.key["key_id"]))
        self.assertEqual(self.encryption_of(upload), {
            "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.key["arn"]})
        bodies = [os.urandom(5 * MiB), b"the end"]
        parts = []
        for number, body in enumerate(bodies, 1):
            part = s3.upload_part(Bucket="bkt", Key="mp", UploadId=upload["UploadId"],
                                  PartNumber=number, Body=body)
            self.assertEqual(part["SSEKMSKeyId"], self.key["arn"])
            parts.append({"PartNumber": number, "ETag": part["ETag"]})
        self.assertS3Error("InvalidRequest", 400, s3.upload_part, Bucket="bkt", Key="mp",
                           UploadId=upload["UploadId"], PartNumber=3, Body=b"x", **sse_c())
        done = s3.complete_multipart_upload(Bucket="bkt", Key="mp",
                                            UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": parts})
        self.assertEqual(done["SSEKMSKeyId"], self.key["arn"])
        got = s3.get_object(Bucket="bkt", Key="mp")
        self.assertEqual(got["SSEKMSKeyId"], self.key["arn"])
        self.assertEqual(got["Body"].read(), b"".join(bodies))

    # Each way to write an object: (arguments of a write, of a read and of
    # a copy from it).
    def kinds(self):
        return {
            "none": ({}, {}, {}),
            "sse-s3": ({"ServerSideEncryption": "AES256"}, {}, {}),
            "sse-c": (sse_c(), sse_c(), sse_c(prefix="CopySource")),
            "sse-kms": (kms(self.key["key_id"]), {}, {}),
        }

    def test_copies_between_every_kind(self):
        s3 = self.s3
        kinds = self.kinds()
        if not self.node.env.get("Z4_ENCRYPTION_KEY"):
            del kinds["sse-s3"]
        body = os.urandom(5 * MiB + 7)
        for source, (write, _, copy_from) in kinds.items():
            s3.put_object(Bucket="bkt", Key=f"src-{source}", Body=body, **write)
        for source, (_, _, copy_from) in kinds.items():
            for target, (write, read, _) in kinds.items():
                what = f"{source} -> {target}"
                key = f"{source}-{target}"
                copied = s3.copy_object(Bucket="bkt", Key=key, CopySource=f"bkt/src-{source}",
                                        **copy_from, **write)
                got = s3.get_object(Bucket="bkt", Key=key, **read)
                self.assertEqual(got["Body"].read(), body, what)
                self.assertEqual(copied.get("SSEKMSKeyId"), got.get("SSEKMSKeyId"), what)
                self.assertEqual("SSEKMSKeyId" in got, target == "sse-kms", what)
                # UploadPartCopy: the upload is the target kind, the source
                # part is a range of the source.
                upload = s3.create_multipart_upload(Bucket="bkt", Key="p-" + key, **write)
                part = s3.upload_part_copy(
                    Bucket="bkt", Key="p-" + key, UploadId=upload["UploadId"], PartNumber=1,
                    CopySource=f"bkt/src-{source}", CopySourceRange="bytes=1-100",
                    **copy_from, **read)
                s3.complete_multipart_upload(
                    Bucket="bkt", Key="p-" + key, UploadId=upload["UploadId"],
                    MultipartUpload={"Parts": [{"PartNumber": 1,
                                                "ETag": part["CopyPartResult"]["ETag"]}]})
                got = s3.get_object(Bucket="bkt", Key="p-" + key, **read)
                self.assertEqual(got["Body"].read(), body[1:101], "part " + what)
                self.assertEqual("SSEKMSKeyId" in got, target == "sse-kms", "part " + what)
        # An SSE-KMS source needs no key; SSE-C copy-source headers on it
        # are refused, as on S3.
        self.assertS3Error("InvalidRequest", 400, s3.copy_object, Bucket="bkt", Key="x",
                           CopySource="bkt/src-sse-kms", **sse_c(prefix="CopySource"))

    def test_aws_cli(self):
        source = os.path.abspath(self.mktemp())
        body = os.urandom(9 * MiB)  # over the CLI's multipart threshold
        with open(source, "wb") as f:
            f.write(body)
        self.node.aws("s3", "cp", "--sse", "aws:kms", "--sse-kms-key-id",
                      self.key["key_id"], source, "s3://bkt/cli")
        head = self.node.aws("s3api", "head-object", "--bucket", "bkt", "--key", "cli")
        self.assertIn('"ServerSideEncryption": "aws:kms"', head.stdout)
        self.assertIn(self.key["arn"], head.stdout)
        target = source + ".back"
        self.node.aws("s3", "cp", "s3://bkt/cli", target)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), body)
        self.node.aws("s3", "cp", "--sse", "aws:kms", "s3://bkt/cli", "s3://bkt/cli-copy")
        refused = self.node.aws("s3", "cp", "--sse", "aws:kms", "--sse-kms-key-id",
                                "alias/nothing", source, "s3://bkt/nope", check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("KMS.NotFoundException", refused.stderr)


class SseKmsTests(SseKmsCore, TestCase):
    def test_parts_and_reads_refuse_encryption_headers(self):
        """A part's encryption is its upload's: UploadPart, UploadPartCopy
        (and GET, HEAD) given x-amz-server-side-encryption or its KMS
        headers are 400 InvalidArgument, as on S3, not silently ignored."""
        s3 = self.s3
        s3.put_object(Bucket="bkt", Key="src", Body=b"source")
        upload = s3.create_multipart_upload(Bucket="bkt", Key="mp", **kms())["UploadId"]
        for header, value in (("x-amz-server-side-encryption", "aws:kms"),
                              ("x-amz-server-side-encryption", "AES256"),
                              ("x-amz-server-side-encryption-aws-kms-key-id",
                               self.key["key_id"])):
            client = self.node.client()

            def add(request, header=header, value=value, **kwargs):
                request.headers[header] = value
            for operation in ("UploadPart", "UploadPartCopy", "GetObject"):
                client.meta.events.register(f"before-sign.s3.{operation}", add)
            what = f"{header}: {value}"
            error = self.assertS3Error("InvalidArgument", 400, client.upload_part,
                                       Bucket="bkt", Key="mp", UploadId=upload,
                                       PartNumber=1, Body=b"x")
            self.assertEqual(error["Error"]["ArgumentName"], header, what)
            self.assertS3Error("InvalidArgument", 400, client.upload_part_copy,
                               Bucket="bkt", Key="mp", UploadId=upload, PartNumber=1,
                               CopySource="bkt/src")
            self.assertS3Error("InvalidArgument", 400, client.get_object,
                               Bucket="bkt", Key="src")

    def test_policy_conditions_on_sse_kms(self):
        s3 = self.s3
        s3.put_object(Bucket="bkt", Key="other-key", Body=b"x", **kms())  # makes aws-s3
        s3.put_bucket_policy(Bucket="bkt", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                 "Resource": "arn:aws:s3:::bkt/*",
                 "Condition": {"StringNotEquals": {
                     "s3:x-amz-server-side-encryption": "aws:kms"}}},
                {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                 "Resource": "arn:aws:s3:::bkt/*",
                 "Condition": {"StringNotEqualsIfExists": {
                     "s3:x-amz-server-side-encryption-aws-kms-key-id": self.key["arn"]}}},
            ]}))
        # The key named by ARN, id or alias: the condition sees its ARN.
        for reference in (self.key["arn"], self.key["key_id"], "alias/photos"):
            s3.put_object(Bucket="bkt", Key="ok", Body=b"x", **kms(reference))
        for refused in ({}, {"ServerSideEncryption": "AES256"}, kms("alias/aws/s3")):
            self.assertS3Error("AccessDenied", 403, s3.put_object, Bucket="bkt", Key="no",
                               Body=b"x", **refused)


class SseKmsOnPlaintextNodeTests(SseKmsCore, TestCase):
    """SSE-KMS needs no node key: the KMS key alone seals the data, so
    nothing of an SSE-KMS object is readable in the data dir."""

    env = KMS_ENV

    def test_nothing_readable_on_disk(self):
        body = b"a secret sentence that must not be on disk " * 200
        self.s3.put_object(Bucket="bkt", Key="small", Body=body[:100], **kms())
        self.s3.put_object(Bucket="bkt", Key="big", Body=body, **kms())
        self.node.stop()
        for directory, _, files in os.walk(self.node.data_dir):
            for name in files:
                with open(os.path.join(directory, name), "rb") as f:
                    self.assertNotIn(b"must not be on disk", f.read(),
                                     os.path.join(directory, name))


class KmsClusterTests(TestCase):
    """Three real nodes with one KMS master key: a KMS key made through one
    node is on every node, and seals and opens objects on another. (Objects
    themselves are not yet shared between nodes: each node serves its own.)"""

    timeout = 300

    @defer.inlineCallbacks
    def test_a_key_made_on_one_node_seals_objects_on_another(self):
        base = os.path.abspath(self.mktemp())
        first = ClusterNode(self, base, 0)
        nodes = [first] + [ClusterNode(self, base, i, join=first.gossip) for i in (1, 2)]
        for node in nodes:
            node.env.update(KMS_ENV)
            node.start()
        code, out, err = nodes[0].z4("kms", "key", "create", "shared", "--json")
        self.assertEqual(code, 0, err)
        key = json.loads(out)

        def known_on_every_node():
            for node in nodes[1:]:
                code, out, err = node.z4("kms", "key", "info", key["key_id"], "--json")
                assert code == 0, err
                assert json.loads(out)["usable"], out
        yield eventually(self, known_on_every_node, "every node knows the KMS key",
                         nodes=nodes)
        writer = nodes[1].client()
        yield eventually(self, lambda: writer.create_bucket(Bucket="bkt"), "a bucket",
                         nodes=nodes)
        body = os.urandom(MiB + 3)
        put = writer.put_object(Bucket="bkt", Key="k", Body=body, **kms("alias/shared"))
        self.assertEqual(put["SSEKMSKeyId"], key["arn"])

        got = writer.get_object(Bucket="bkt", Key="k")
        self.assertEqual((got["Body"].read(), got["SSEKMSKeyId"]), (body, key["arn"]))
