"""Encryption against real processes: SSE-S3, bucket default encryption and
SSE-C through boto3 and the aws CLI over TLS; no plaintext anywhere in an
encrypted data dir; `z4 encryption rotate` with a SIGKILL in the middle;
start-up refusals; and the durability and memory tests with encryption on."""

import base64
import hashlib
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import botocore.exceptions
from twisted.trial.unittest import TestCase

from tests import test_durability
from tests.nodeprocess import NodeProcess, child_environment, self_signed_certificate

MiB = 1024 * 1024
KEY = "a1" * 32
NEW_KEY = base64.b64encode(bytes(range(32))).decode()
ENV = {"Z4_ENCRYPTION_KEY": KEY}
CUSTOMER_KEY = hashlib.sha256(b"customer one").digest()
OTHER_CUSTOMER_KEY = hashlib.sha256(b"customer two").digest()


def sse_c(key=CUSTOMER_KEY, prefix=""):
    return {f"{prefix}SSECustomerAlgorithm": "AES256", f"{prefix}SSECustomerKey": key}


def marked(size, mark):
    return (mark * (size // len(mark) + 1))[:size]


class ErrorAssertions:
    def assertS3Error(self, code, status, call, *args, **kwargs):
        with self.assertRaises(botocore.exceptions.ClientError) as raised:
            call(*args, **kwargs)
        error = raised.exception.response
        self.assertEqual(error["ResponseMetadata"]["HTTPStatusCode"], status, error)
        if code is not None:  # HEAD errors have no body, so no code
            self.assertEqual(error["Error"]["Code"], code, error)
        return error


class SseS3Tests(ErrorAssertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self, env=ENV).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")

    def test_every_object_is_reported_aes256(self):
        s3 = self.s3
        for key, body in (("small", b"x" * 100), ("big", os.urandom(5 * MiB))):
            put = s3.put_object(Bucket="bkt", Key=key, Body=body)
            self.assertEqual(put["ServerSideEncryption"], "AES256")
            self.assertEqual(put["ETag"].strip('"'), hashlib.md5(body).hexdigest())
            self.assertEqual(s3.head_object(Bucket="bkt", Key=key)["ServerSideEncryption"],
                             "AES256")
            got = s3.get_object(Bucket="bkt", Key=key)
            self.assertEqual(got["ServerSideEncryption"], "AES256")
            self.assertEqual(got["Body"].read(), body)
        asked = s3.put_object(Bucket="bkt", Key="asked", Body=b"y",
                              ServerSideEncryption="AES256")
        self.assertEqual(asked["ServerSideEncryption"], "AES256")
        self.assertS3Error("NotImplemented", 501, s3.put_object, Bucket="bkt", Key="kms",
                           Body=b"z", ServerSideEncryption="aws:kms")

    def test_copy_and_multipart_with_sse_s3(self):
        s3 = self.s3
        s3.put_object(Bucket="bkt", Key="src", Body=b"copy me")
        copied = s3.copy_object(Bucket="bkt", Key="dst", CopySource="bkt/src",
                                ServerSideEncryption="AES256")
        self.assertEqual(copied["ServerSideEncryption"], "AES256")
        # Naming the encryption makes a copy onto itself legal, as on S3.
        s3.copy_object(Bucket="bkt", Key="src", CopySource="bkt/src",
                       ServerSideEncryption="AES256")
        self.assertEqual(s3.get_object(Bucket="bkt", Key="src")["Body"].read(), b"copy me")
        upload = s3.create_multipart_upload(Bucket="bkt", Key="mp",
                                            ServerSideEncryption="AES256")
        self.assertEqual(upload["ServerSideEncryption"], "AES256")
        part = s3.upload_part(Bucket="bkt", Key="mp", UploadId=upload["UploadId"],
                              PartNumber=1, Body=b"only part")
        self.assertEqual(part["ServerSideEncryption"], "AES256")
        done = s3.complete_multipart_upload(
            Bucket="bkt", Key="mp", UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        self.assertEqual(done["ServerSideEncryption"], "AES256")

    def test_bucket_default_encryption(self):
        s3 = self.s3
        rule = s3.get_bucket_encryption(Bucket="bkt")["ServerSideEncryptionConfiguration"]
        self.assertEqual(rule["Rules"][0]["ApplyServerSideEncryptionByDefault"],
                         {"SSEAlgorithm": "AES256"})
        s3.put_bucket_encryption(Bucket="bkt", ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                       "BucketKeyEnabled": True}]})
        rule = s3.get_bucket_encryption(Bucket="bkt")["ServerSideEncryptionConfiguration"]
        self.assertTrue(rule["Rules"][0]["BucketKeyEnabled"])
        self.assertS3Error("NotImplemented", 501, s3.put_bucket_encryption, Bucket="bkt",
                           ServerSideEncryptionConfiguration={"Rules": [{
                               "ApplyServerSideEncryptionByDefault": {
                                   "SSEAlgorithm": "aws:kms"}}]})
        s3.delete_bucket_encryption(Bucket="bkt")
        rule = s3.get_bucket_encryption(Bucket="bkt")["ServerSideEncryptionConfiguration"]
        self.assertFalse(rule["Rules"][0]["BucketKeyEnabled"])
        self.assertS3Error("NoSuchBucket", 404, s3.get_bucket_encryption, Bucket="nothere")
        code, out, err = self.node.z4("key", "create", "stranger")
        self.assertEqual(code, 0, err)
        lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        stranger = self.node.client((lines["Access key id"], lines["Secret access key"]))
        self.assertS3Error("AccessDenied", 403, stranger.get_bucket_encryption, Bucket="bkt")
        self.assertS3Error("AccessDenied", 403, stranger.delete_bucket_encryption,
                           Bucket="bkt")

    def test_aws_cli(self):
        source = os.path.abspath(self.mktemp())
        with open(source, "wb") as f:
            f.write(os.urandom(9 * MiB))
        self.node.aws("s3", "cp", "--sse", "AES256", source, "s3://bkt/cli")
        head = self.node.aws("s3api", "head-object", "--bucket", "bkt", "--key", "cli")
        self.assertIn('"ServerSideEncryption": "AES256"', head.stdout)
        self.node.aws("s3api", "put-bucket-encryption", "--bucket", "bkt",
                      "--server-side-encryption-configuration",
                      '{"Rules":[{"ApplyServerSideEncryptionByDefault":'
                      '{"SSEAlgorithm":"AES256"}}]}')
        got = self.node.aws("s3api", "get-bucket-encryption", "--bucket", "bkt")
        self.assertIn('"SSEAlgorithm": "AES256"', got.stdout)
        kms = self.node.aws("s3", "cp", "--sse", "aws:kms", source, "s3://bkt/kms",
                            check=False)
        self.assertNotEqual(kms.returncode, 0)
        self.assertIn("NotImplemented", kms.stderr)


class PlaintextNodeTests(ErrorAssertions, TestCase):
    """A node without a node key cannot promise SSE-S3; SSE-C needs TLS."""

    def test_no_node_key_means_no_sse_s3(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        put = s3.put_object(Bucket="bkt", Key="k", Body=b"plain")
        self.assertNotIn("ServerSideEncryption", put)
        self.assertNotIn("ServerSideEncryption", s3.head_object(Bucket="bkt", Key="k"))
        error = self.assertS3Error("NotImplemented", 501, s3.put_object, Bucket="bkt",
                                   Key="e", Body=b"x", ServerSideEncryption="AES256")
        self.assertIn("Z4_ENCRYPTION_KEY", error["Error"]["Message"])
        self.assertS3Error("ServerSideEncryptionConfigurationNotFoundError", 404,
                           s3.get_bucket_encryption, Bucket="bkt")
        self.assertS3Error("NotImplemented", 501, s3.put_bucket_encryption, Bucket="bkt",
                           ServerSideEncryptionConfiguration={"Rules": [{
                               "ApplyServerSideEncryptionByDefault": {
                                   "SSEAlgorithm": "AES256"}}]})
        error = self.assertS3Error("InvalidRequest", 400, s3.put_object, Bucket="bkt",
                                   Key="c", Body=b"x", **sse_c())
        self.assertIn("secure connection", error["Error"]["Message"])

    def test_trusted_proxy_vouches_for_tls(self):
        node = NodeProcess(self, args=["--trusted-proxy", "127.0.0.1"]).start()
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        self.assertS3Error("InvalidRequest", 400, s3.put_object, Bucket="bkt",
                           Key="c", Body=b"x", **sse_c())

        def forwarded(request, **kwargs):
            request.headers["X-Forwarded-Proto"] = "https"
        s3.meta.events.register("before-sign.s3.*", forwarded)
        s3.put_object(Bucket="bkt", Key="c", Body=b"behind a proxy", **sse_c())
        got = s3.get_object(Bucket="bkt", Key="c", **sse_c())
        self.assertEqual(got["Body"].read(), b"behind a proxy")


class SseCCore(ErrorAssertions):
    """SSE-C over TLS; run on an encrypted node and on a plaintext one."""

    env = ENV

    def setUp(self):
        self.node = NodeProcess(self, env=self.env, tls=True).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")

    def test_put_get_head_and_ranges(self):
        s3 = self.s3
        md5 = base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()
        for key, body in (("small", b"tiny secret"), ("big", os.urandom(9 * MiB + 5))):
            put = s3.put_object(Bucket="bkt", Key=key, Body=body, **sse_c())
            self.assertEqual((put["SSECustomerAlgorithm"], put["SSECustomerKeyMD5"]),
                             ("AES256", md5))
            self.assertNotIn("ServerSideEncryption", put)
            self.assertNotEqual(put["ETag"].strip('"'), hashlib.md5(body).hexdigest())
            head = s3.head_object(Bucket="bkt", Key=key, **sse_c())
            self.assertEqual((head["ContentLength"], head["SSECustomerKeyMD5"]),
                             (len(body), md5))
            self.assertEqual(head["ETag"], put["ETag"])
            got = s3.get_object(Bucket="bkt", Key=key, **sse_c())
            self.assertEqual(got["Body"].read(), body)
            ranged = s3.get_object(Bucket="bkt", Key=key, Range="bytes=3-8", **sse_c())
            self.assertEqual(ranged["Body"].read(), body[3:9])
        tail = s3.get_object(Bucket="bkt", Key="big", Range=f"bytes={4 * MiB - 2}-",
                             **sse_c())["Body"].read()
        self.assertEqual(tail, body[4 * MiB - 2:])
        listed = s3.list_objects_v2(Bucket="bkt")["Contents"]
        self.assertEqual(sorted(o["Key"] for o in listed), ["big", "small"])

    def test_missing_wrong_and_malformed_keys(self):
        s3 = self.s3
        s3.put_object(Bucket="bkt", Key="c", Body=b"secret", **sse_c())
        s3.put_object(Bucket="bkt", Key="plain", Body=b"open")
        error = self.assertS3Error("InvalidRequest", 400, s3.get_object, Bucket="bkt",
                                   Key="c")
        self.assertIn("correct parameters must be provided", error["Error"]["Message"])
        self.assertS3Error(None, 400, s3.head_object, Bucket="bkt", Key="c")
        error = self.assertS3Error("InvalidArgument", 400, s3.get_object, Bucket="bkt",
                                   Key="c", **sse_c(OTHER_CUSTOMER_KEY))
        self.assertIn("does not match", error["Error"]["Message"])
        self.assertS3Error(None, 400, s3.head_object, Bucket="bkt", Key="c",
                           **sse_c(OTHER_CUSTOMER_KEY))
        self.assertS3Error("InvalidRequest", 400, s3.get_object, Bucket="bkt",
                           Key="plain", **sse_c())
        wrong_md5 = {"SSECustomerAlgorithm": "AES256",
                     "SSECustomerKey": base64.b64encode(CUSTOMER_KEY).decode(),
                     "SSECustomerKeyMD5": base64.b64encode(b"0" * 16).decode()}
        error = self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt",
                                   Key="m", Body=b"x", **wrong_md5)
        self.assertIn("MD5", error["Error"]["Message"])
        self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt", Key="s",
                           Body=b"x", **sse_c(b"short key"))
        self.assertS3Error("InvalidArgument", 400, s3.put_object, Bucket="bkt", Key="b",
                           Body=b"x", ServerSideEncryption="AES256", **sse_c())
        self.assertS3Error("InvalidEncryptionAlgorithmError", 400, s3.put_object,
                           Bucket="bkt", Key="a", Body=b"x", SSECustomerAlgorithm="AES128",
                           SSECustomerKey=CUSTOMER_KEY)

    def test_multipart(self):
        s3 = self.s3
        upload = s3.create_multipart_upload(Bucket="bkt", Key="mp", **sse_c())
        self.assertEqual(upload["SSECustomerAlgorithm"], "AES256")
        upload_id = upload["UploadId"]
        first = os.urandom(5 * MiB)
        self.assertS3Error("InvalidRequest", 400, s3.upload_part, Bucket="bkt", Key="mp",
                           UploadId=upload_id, PartNumber=1, Body=first)
        self.assertS3Error("InvalidRequest", 400, s3.upload_part, Bucket="bkt", Key="mp",
                           UploadId=upload_id, PartNumber=1, Body=first,
                           **sse_c(OTHER_CUSTOMER_KEY))
        p1 = s3.upload_part(Bucket="bkt", Key="mp", UploadId=upload_id, PartNumber=1,
                            Body=first, **sse_c())
        self.assertIn("SSECustomerKeyMD5", p1)
        s3.put_object(Bucket="bkt", Key="src", Body=b"0123456789", **sse_c(OTHER_CUSTOMER_KEY))
        p2 = s3.upload_part_copy(Bucket="bkt", Key="mp", UploadId=upload_id, PartNumber=2,
                                 CopySource="bkt/src", CopySourceRange="bytes=2-5",
                                 **sse_c(OTHER_CUSTOMER_KEY, prefix="CopySource"), **sse_c())
        done = s3.complete_multipart_upload(
            Bucket="bkt", Key="mp", UploadId=upload_id, **sse_c(), MultipartUpload={"Parts": [
                {"PartNumber": 1, "ETag": p1["ETag"]},
                {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
        headers = done["ResponseMetadata"]["HTTPHeaders"]
        self.assertEqual(headers["x-amz-server-side-encryption-customer-algorithm"], "AES256")
        self.assertEqual(s3.get_object(Bucket="bkt", Key="mp", **sse_c())["Body"].read(),
                         first + b"2345")
        self.assertS3Error("InvalidRequest", 400, s3.get_object, Bucket="bkt", Key="mp")


class SseCTests(SseCCore, TestCase):
    def test_copies(self):
        s3 = self.s3
        body = os.urandom(5 * MiB + 1)
        s3.put_object(Bucket="bkt", Key="src", Body=body, **sse_c())
        self.assertS3Error("InvalidRequest", 400, s3.copy_object, Bucket="bkt", Key="x",
                           CopySource="bkt/src")
        self.assertS3Error("InvalidArgument", 400, s3.copy_object, Bucket="bkt", Key="x",
                           CopySource="bkt/src",
                           **sse_c(OTHER_CUSTOMER_KEY, prefix="CopySource"))
        # SSE-C -> SSE-C under another key.
        copied = s3.copy_object(Bucket="bkt", Key="rekeyed", CopySource="bkt/src",
                                **sse_c(prefix="CopySource"), **sse_c(OTHER_CUSTOMER_KEY))
        self.assertIn("SSECustomerKeyMD5", copied)
        self.assertEqual(s3.get_object(Bucket="bkt", Key="rekeyed",
                                       **sse_c(OTHER_CUSTOMER_KEY))["Body"].read(), body)
        self.assertS3Error("InvalidArgument", 400, s3.get_object, Bucket="bkt",
                           Key="rekeyed", **sse_c())
        # SSE-C -> SSE-S3.
        plain = s3.copy_object(Bucket="bkt", Key="opened", CopySource="bkt/src",
                               **sse_c(prefix="CopySource"))
        self.assertEqual(plain["ServerSideEncryption"], "AES256")
        self.assertEqual(s3.get_object(Bucket="bkt", Key="opened")["Body"].read(), body)
        # SSE-S3 -> SSE-C, and onto itself with a new key.
        s3.copy_object(Bucket="bkt", Key="opened", CopySource="bkt/opened", **sse_c())
        self.assertEqual(s3.get_object(Bucket="bkt", Key="opened", **sse_c())["Body"].read(),
                         body)
        s3.copy_object(Bucket="bkt", Key="opened", CopySource="bkt/opened",
                       **sse_c(prefix="CopySource"), **sse_c(OTHER_CUSTOMER_KEY))
        self.assertEqual(s3.get_object(Bucket="bkt", Key="opened",
                                       **sse_c(OTHER_CUSTOMER_KEY))["Body"].read(), body)

    def test_aws_cli(self):
        node = self.node
        key_file = os.path.abspath(self.mktemp())
        with open(key_file, "wb") as f:
            f.write(CUSTOMER_KEY)
        source = os.path.abspath(self.mktemp())
        body = os.urandom(20 * MiB + 3)  # over the CLI's multipart threshold
        with open(source, "wb") as f:
            f.write(body)
        sse = ["--sse-c", "AES256", "--sse-c-key", f"fileb://{key_file}"]
        node.aws("s3", "cp", *sse, source, "s3://bkt/cli")
        target = os.path.abspath(self.mktemp())
        node.aws("s3", "cp", *sse, "s3://bkt/cli", target)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), body)
        refused = node.aws("s3", "cp", "s3://bkt/cli", target + ".2", check=False)
        self.assertNotEqual(refused.returncode, 0)
        head = node.aws("s3api", "head-object", "--bucket", "bkt", "--key", "cli",
                        "--sse-customer-algorithm", "AES256",
                        "--sse-customer-key", f"fileb://{key_file}")
        self.assertIn('"SSECustomerAlgorithm": "AES256"', head.stdout)
        node.aws("s3", "cp", *sse, "--sse-c-copy-source", "AES256",
                 "--sse-c-copy-source-key", f"fileb://{key_file}",
                 "s3://bkt/cli", "s3://bkt/cli-copy")
        node.aws("s3", "cp", *sse, "s3://bkt/cli-copy", target + ".3")
        with open(target + ".3", "rb") as f:
            self.assertEqual(f.read(), body)


class SseCOnPlaintextNodeTests(SseCCore, TestCase):
    """SSE-C needs no node key: the customer's key alone seals the data."""

    env = {}


class TLSTests(TestCase):
    def test_https_only_and_local_tools_follow(self):
        node = NodeProcess(self, tls=True).start()
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        with self.assertRaises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{node.port}/_z4/ping", timeout=5).read()
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen(node.endpoint + "/_z4/ping", timeout=5,
                                   context=ssl.create_default_context()).read()
        code, out, err = node.z4("cluster", "status")
        self.assertEqual(code, 0, err)
        code, _, err = node.z4("--json", "cluster", "members")
        self.assertEqual(code, 0, err)

    def test_sighup_reloads_the_certificate_and_keeps_it_if_unusable(self):
        node = NodeProcess(self, tls=True).start()

        def served():
            return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(
                ssl.get_server_certificate(("127.0.0.1", node.port), timeout=5)))

        def on_disk():
            with open(node.tls[0]) as f:
                return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(f.read()))

        def wait_for(condition):
            deadline = time.monotonic() + 20
            while not condition():
                self.assertLess(time.monotonic(), deadline, node.log()[-2000:])
                time.sleep(0.1)

        first = on_disk()
        self.assertEqual(served(), first)
        renewed = self_signed_certificate(self.mktemp())
        for new, current in zip(renewed, node.tls):
            os.replace(new, current)
        node.process.send_signal(signal.SIGHUP)
        wait_for(lambda: served() == on_disk())
        self.assertNotEqual(served(), first)
        node.client().create_bucket(Bucket="after-reload")

        # A key that does not match: refused, the renewed pair stays.
        serving = served()
        os.replace(self_signed_certificate(self.mktemp())[1], node.tls[1])
        node.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "TLS certificate not reloaded" in node.log())
        self.assertEqual(served(), serving)
        self.assertIn("after-reload",
                      [b["Name"] for b in node.client().list_buckets()["Buckets"]])

    def test_unusable_certificate_is_a_usage_error(self):
        good = NodeProcess(self, tls=True)
        other = NodeProcess(self, tls=True)
        node = NodeProcess(self, args=["--tls-cert", good.tls[0], "--tls-key", other.tls[1]])
        # twistd prints usage errors on stdout.
        done = subprocess.run(node.command(), env=child_environment(), capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("not a usable PEM certificate and matching private key", done.stdout)


def files_under(directory):
    for root, _, names in os.walk(directory):
        for name in names:
            yield os.path.join(root, name)


class NoPlaintextOnDiskTests(TestCase):
    """With a node key, no byte of a known object (chunked or inline) nor
    of a key's secret is anywhere in the data dir -- the SQLite WAL
    included, read while the node runs and again after SIGKILL. The same
    search finds them all on a node without a key, so it would notice."""

    big = marked(9 * MiB + 11, b"<chunked object plaintext>")
    small = marked(3000, b"<inline object plaintext>")

    def fill(self, node):
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="big", Body=self.big)
        s3.put_object(Bucket="bkt", Key="small", Body=self.small)
        code, out, err = node.z4("key", "create", "reader")
        self.assertEqual(code, 0, err)
        secret = [line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith("Secret access key")][0]
        node.z4("bucket", "allow", "bkt", "--key", "reader", "--read")
        self.assertEqual(s3.get_object(Bucket="bkt", Key="big")["Body"].read(), self.big)
        return secret

    def found(self, data_dir, needles):
        """{needle: [paths holding it]} over every file of the data dir."""
        hits = {needle: [] for needle in needles}
        for path in files_under(data_dir):
            try:
                with open(path, "rb") as f:
                    content = f.read()
            except OSError:  # the admin socket
                continue
            for needle in needles:
                if needle in content:
                    hits[needle].append(os.path.relpath(path, data_dir))
        return hits

    def needles(self, secret):
        return [self.big[:40], self.big[5 * MiB:5 * MiB + 40], self.big[-40:],
                self.small[:40], self.small[-40:], secret.encode()]

    def test_nothing_readable_with_a_node_key(self):
        node = NodeProcess(self, env=ENV).start()
        secret = self.fill(node)
        admin_secret = node.credentials()[1].encode()
        self.assertTrue(os.path.exists(os.path.join(node.data_dir, "meta.sqlite3-wal")))
        for moment in ("running", "after SIGKILL"):
            hits = self.found(node.data_dir, self.needles(secret) + [admin_secret])
            for needle, paths in hits.items():
                if needle == admin_secret:
                    # The one deliberate exception: the admin key's
                    # credentials file (docs/security.md).
                    self.assertEqual(paths, ["credentials"], moment)
                else:
                    self.assertEqual(paths, [], f"{needle[:30]!r} readable {moment}")
            node.kill()
        restarted = NodeProcess(self, data_dir=node.data_dir, env=ENV).start()
        reader = restarted.client((_key_id(restarted, "reader"), secret))
        self.assertEqual(reader.get_object(Bucket="bkt", Key="small")["Body"].read(),
                         self.small)

    def test_the_search_finds_plaintext_without_a_key(self):
        node = NodeProcess(self).start()
        secret = self.fill(node)
        node.kill()
        hits = self.found(node.data_dir, self.needles(secret))
        for needle, paths in hits.items():
            self.assertNotEqual(paths, [], f"{needle[:30]!r} not found in a plaintext dir")


def _key_id(node, name):
    code, out, err = node.z4("--json", "key", "info", name)
    return json.loads(out)["access_key_id"]


class RotationProcessTests(TestCase):
    def chunk_files(self, data_dir):
        out = {}
        for path in files_under(os.path.join(data_dir, "chunks")):
            with open(path, "rb") as f:
                out[os.path.relpath(path, data_dir)] = hashlib.sha256(f.read()).hexdigest()
        return out

    def test_rotate_kill_resume_with_new_key(self):
        node = NodeProcess(self, env=ENV).start()
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        contents = {f"small/{i}": os.urandom(50 + i) for i in range(400)}
        contents["big"] = os.urandom(13 * MiB)
        for name, body in contents.items():
            s3.put_object(Bucket="bkt", Key=name, Body=body)
        before = self.chunk_files(node.data_dir)
        # 404 data keys at 100 a second: about four seconds of rotation.
        code, out, err = node.z4("encryption", "rotate", "--no-wait", "--max-rate", "100",
                                 env={"Z4_NEW_ENCRYPTION_KEY": NEW_KEY})
        self.assertEqual(code, 0, err)
        time.sleep(1.2)
        code, out, err = node.z4("--json", "encryption", "status")
        self.assertIn('"rotating": true', out)
        node.kill(signal.SIGKILL)
        db = sqlite3.connect(os.path.join(node.data_dir, "meta.sqlite3"))
        self.assertIsNotNone(db.execute("SELECT value FROM node_settings WHERE "
                                        "name='encryption_rotation'").fetchone())
        db.close()
        # Restarted with the *new* key mid-rotation: it opens the data dir
        # (the rotation record holds the old key under it) and resumes.
        env = {"Z4_ENCRYPTION_KEY": NEW_KEY}
        node = NodeProcess(self, data_dir=node.data_dir, port=node.port, env=env).start()
        s3 = node.client()
        self.assertEqual(s3.get_object(Bucket="bkt", Key="small/7")["Body"].read(),
                         contents["small/7"])
        code, out, err = node.z4("encryption", "rotate")
        self.assertEqual(code, 0, err)
        self.assertIn("100%", out)
        self.assertIn("Rotation finished", out)
        self.assertIn("resuming the key rotation", node.log())
        self.assertEqual(self.chunk_files(node.data_dir), before, "chunk data rewritten")
        node.stop()
        old = NodeProcess(self, data_dir=node.data_dir, env=ENV)
        with self.assertRaises(RuntimeError) as raised:
            old.start()
        self.assertIn("rotated out", str(raised.exception))
        node = NodeProcess(self, data_dir=node.data_dir, env=env).start()
        s3 = node.client()
        for name, body in contents.items():
            self.assertEqual(s3.get_object(Bucket="bkt", Key=name)["Body"].read(), body, name)


class StartupTests(TestCase):
    def test_malformed_key_is_refused_before_starting(self):
        node = NodeProcess(self, env={"Z4_ENCRYPTION_KEY": "swordfish"})
        with self.assertRaises(RuntimeError) as raised:
            node.start()
        self.assertIn("64 hex digits", str(raised.exception))

    def test_plaintext_data_dir_refuses_a_key(self):
        node = NodeProcess(self).start()
        node.stop()
        again = NodeProcess(self, data_dir=node.data_dir, env=ENV)
        with self.assertRaises(RuntimeError) as raised:
            again.start()
        self.assertIn("created without Z4_ENCRYPTION_KEY", str(raised.exception))
        encrypted = NodeProcess(self, env=ENV).start()
        encrypted.stop()
        keyless = NodeProcess(self, data_dir=encrypted.data_dir)
        with self.assertRaises(RuntimeError) as raised:
            keyless.start()
        self.assertIn("is encrypted", str(raised.exception))


class EncryptedCrashDuringPutTests(test_durability.CrashDuringPutTests):
    env = ENV


class EncryptedMemoryTests(test_durability.MemoryTests):
    env = ENV
