"""Browser uploads: forms made by boto3's generate_presigned_post (SigV2,
its default against a custom endpoint, and SigV4), posted as a browser
posts them (multipart/form-data, file last), with every policy condition
and its S3 error."""

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timedelta, timezone
from xml.etree import ElementTree

import requests
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from z4node.s3.errors import S3Error
from z4node.s3.handlers.post_object import check_policy


class PolicyTests(TestCase):
    def check(self, conditions, fields, expires_in=60):
        expiration = (datetime(2030, 1, 1, tzinfo=timezone.utc)
                      + timedelta(seconds=expires_in)).isoformat()
        now = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
        return check_policy({"expiration": expiration, "conditions": conditions},
                            fields, "bkt", now)

    def refused(self, *args, **kwargs):
        with self.assertRaises(S3Error) as raised:
            self.check(*args, **kwargs)
        return raised.exception

    def test_conditions(self):
        fields = {"key": "uploads/a.txt", "content-type": "text/plain",
                  "x-amz-meta-who": "me", "x-ignore-this": "1"}
        conditions = [{"bucket": "bkt"}, ["starts-with", "$key", "uploads/"],
                      ["eq", "$Content-Type", "text/plain"], {"x-amz-meta-who": "me"},
                      ["content-length-range", 1, 100]]
        self.assertEqual(self.check(conditions, fields), (1, 100))
        self.assertIn("Policy expired", self.refused(conditions, fields, -1).message)
        error = self.refused(conditions[1:], dict(fields, key="other/a.txt"))
        self.assertEqual(error.message, 'Invalid according to Policy: Policy Condition failed:'
                                        ' ["starts-with", "$key", "uploads/"]')
        error = self.refused([{"bucket": "other"}] + conditions[1:], fields)
        self.assertEqual(error.code, "AccessDenied")
        error = self.refused(conditions[:3], fields)
        self.assertEqual(error.message,
                         "Invalid according to Policy: Extra input fields: x-amz-meta-who")
        self.assertEqual(self.refused([["between", "$key", "a"]], fields).code,
                         "InvalidPolicyDocument")


class PostObjectTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="forms")

    def post(self, form, data=b"hello", filename="hello.txt", extra=None):
        fields = dict(form["fields"])
        fields.update(extra or {})
        return requests.post(form["url"], data=fields,
                             files={"file": (filename, data, "text/plain")}, timeout=60)

    def code(self, response):
        return ElementTree.fromstring(response.content).findtext("Code")

    def test_sigv2_form_from_boto3(self):
        form = self.s3.generate_presigned_post(
            "forms", "uploads/${filename}",
            Fields={"Content-Type": "text/plain", "x-amz-meta-origin": "browser"},
            Conditions=[["starts-with", "$Content-Type", "text/"],
                        {"x-amz-meta-origin": "browser"},
                        ["content-length-range", 1, 10 * 1024 * 1024]])
        self.assertIn("signature", form["fields"])  # SigV2: boto3's default here
        response = self.post(form, filename="notes.txt")
        self.assertEqual(response.status_code, 204, response.text)
        got = self.s3.get_object(Bucket="forms", Key="uploads/notes.txt")
        self.assertEqual(got["Body"].read(), b"hello")
        self.assertEqual((got["ContentType"], got["Metadata"]),
                         ("text/plain", {"origin": "browser"}))
        self.assertEqual(response.headers["ETag"], got["ETag"])

    def test_sigv4_form_large_file_and_201(self):
        s3 = self.node.client(signature_version="s3v4")
        form = s3.generate_presigned_post(
            "forms", "big.bin", Fields={"success_action_status": "201"},
            Conditions=[{"success_action_status": "201"}])
        self.assertEqual(form["fields"]["x-amz-algorithm"], "AWS4-HMAC-SHA256")
        data = os.urandom(9 * 1024 * 1024 + 17)
        response = self.post(form, data)
        self.assertEqual(response.status_code, 201, response.text)
        document = ElementTree.fromstring(response.content)
        self.assertEqual((document.findtext("Bucket"), document.findtext("Key")),
                         ("forms", "big.bin"))
        got = self.s3.get_object(Bucket="forms", Key="big.bin")["Body"].read()
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    def test_redirect_and_status_200(self):
        form = self.s3.generate_presigned_post(
            "forms", "r.txt", Fields={"success_action_redirect": "https://app.test/done"},
            Conditions=[{"success_action_redirect": "https://app.test/done"}])
        response = requests.post(form["url"], data=form["fields"],
                                 files={"file": ("r.txt", b"x")}, allow_redirects=False,
                                 timeout=60)
        self.assertEqual(response.status_code, 303, response.text)
        self.assertTrue(response.headers["Location"].startswith(
            "https://app.test/done?bucket=forms&key=r.txt&etag="))
        form = self.s3.generate_presigned_post("forms", "s.txt",
                                               Fields={"success_action_status": "200"},
                                               Conditions=[{"success_action_status": "200"}])
        self.assertEqual(self.post(form).status_code, 200)

    def test_policy_failures_answer_aws_errors(self):
        form = self.s3.generate_presigned_post(
            "forms", "up/${filename}", Conditions=[["content-length-range", 2, 10]])
        too_big = self.post(form, b"x" * 11)
        self.assertEqual((too_big.status_code, self.code(too_big)), (400, "EntityTooLarge"))
        too_small = self.post(form, b"x")
        self.assertEqual((too_small.status_code, self.code(too_small)), (400, "EntityTooSmall"))
        extra = self.post(form, extra={"x-amz-meta-sneaky": "1"})
        self.assertEqual((extra.status_code, self.code(extra)), (403, "AccessDenied"))
        self.assertIn("Extra input fields: x-amz-meta-sneaky", extra.text)
        wrong_key = self.post(form, extra={"key": "elsewhere/x"})
        self.assertEqual((wrong_key.status_code, self.code(wrong_key)), (403, "AccessDenied"))
        self.assertIn("Policy Condition failed", wrong_key.text)
        forged = self.post(form, extra={"signature": base64.b64encode(b"x" * 20).decode()})
        self.assertEqual((forged.status_code, self.code(forged)),
                         (403, "SignatureDoesNotMatch"))
        expired = self.s3.generate_presigned_post("forms", "e", ExpiresIn=-10)
        response = self.post(expired)
        self.assertEqual((response.status_code, self.code(response)), (403, "AccessDenied"))
        self.assertIn("Policy expired", response.text)
        no_file = requests.post(form["url"], timeout=60, files={
            name: (None, value) for name, value in form["fields"].items()})
        self.assertEqual((no_file.status_code, self.code(no_file)),
                         (400, "IncorrectNumberOfFilesInPostRequest"))
        unsigned = requests.post(form["url"], files={"key": (None, "k"),
                                                     "file": ("a", b"x")}, timeout=60)
        self.assertEqual((unsigned.status_code, self.code(unsigned)), (403, "AccessDenied"))
        cut = requests.post(form["url"], timeout=60, data=(
            b"--xyz\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nabc"),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        self.assertEqual((cut.status_code, self.code(cut)), (400, "MalformedPOSTRequest"))
        not_a_form = requests.post(form["url"], data=b"key=k", timeout=60, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((not_a_form.status_code, self.code(not_a_form)),
                         (412, "PreconditionFailed"))
        self.assertEqual(self.s3.list_objects_v2(Bucket="forms")["KeyCount"], 0)

    def test_hand_made_sigv4_form_with_tagging_and_fields_after_the_file(self):
        """A form built as AWS's browser-upload example builds it."""
        access, secret = self.node.credentials()
        now = datetime.now(timezone.utc)
        date = now.strftime("%Y%m%d")
        credential = f"{access}/{date}/us-east-1/s3/aws4_request"
        tagging = ("<Tagging><TagSet><Tag><Key>kind</Key><Value>photo</Value></Tag>"
                   "</TagSet></Tagging>")
        policy = base64.b64encode(json.dumps({
            "expiration": (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "conditions": [{"bucket": "forms"}, ["starts-with", "$key", "user/"],
                           {"tagging": tagging}, {"x-amz-credential": credential},
                           {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                           {"x-amz-date": now.strftime("%Y%m%dT%H%M%SZ")}]}).encode())
        key = b"AWS4" + secret.encode()
        for part in (date, "us-east-1", "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, policy, hashlib.sha256).hexdigest()
        fields = [("key", "user/photo.jpg"), ("tagging", tagging),
                  ("X-Amz-Credential", credential), ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                  ("X-Amz-Date", now.strftime("%Y%m%dT%H%M%SZ")),
                  ("Policy", policy.decode()), ("X-Amz-Signature", signature)]
        files = [(name, (None, value)) for name, value in fields]
        files.append(("file", ("photo.jpg", b"\xff\xd8jpeg", "image/jpeg")))
        files.append(("ignored-after-file", (None, "x")))
        response = requests.post(self.node.endpoint + "/forms", files=files, timeout=60)
        self.assertEqual(response.status_code, 204, response.text)
        tags = self.s3.get_object_tagging(Bucket="forms", Key="user/photo.jpg")["TagSet"]
        self.assertEqual(tags, [{"Key": "kind", "Value": "photo"}])

    def test_sse_field_asks_for_sse_s3(self):
        node = NodeProcess(self, env={"Z4_ENCRYPTION_KEY": os.urandom(32).hex()}).start()
        s3 = node.client()
        s3.create_bucket(Bucket="sealed")
        form = s3.generate_presigned_post(
            "sealed", "doc.txt", Fields={"x-amz-server-side-encryption": "AES256"},
            Conditions=[{"x-amz-server-side-encryption": "AES256"}])
        response = self.post(form, b"kept sealed")
        self.assertEqual(response.status_code, 204, response.text)
        self.assertEqual(response.headers["x-amz-server-side-encryption"], "AES256")
        got = s3.get_object(Bucket="sealed", Key="doc.txt")
        self.assertEqual((got["Body"].read(), got["ServerSideEncryption"]),
                         (b"kept sealed", "AES256"))
        bad = s3.generate_presigned_post(
            "sealed", "bad.txt", Fields={"x-amz-server-side-encryption": "aws:kms"},
            Conditions=[{"x-amz-server-side-encryption": "aws:kms"}])
        self.assertEqual(self.post(bad).status_code, 501)
