"""Authentication against a real node, over real sockets: SigV4 and SigV2
headers, presigned URLs (boto3's default SigV2 ones and SigV4 ones) fetched
with curl, the failures (expired, wrong secret, unknown key, anonymous,
clock skew), aws-chunked bodies (signed chunks, signed and unsigned
trailers), ``Expect: 100-continue``, and the shape of every error."""

import base64
import datetime
import hashlib
import os
import socket
import subprocess
import zlib

from botocore import UNSIGNED
from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions
from tests.signing import aws_chunked, signing_key
from tests.test_s3_objects import KEYS

MiB = 1024 * 1024


def curl(*args, data_file=None):
    """Run curl (127.0.0.1 only); (HTTP status, body bytes)."""
    command = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "60",
               "--output", "-", "--write-out", "\n%{http_code}", *args]
    done = subprocess.run(command, capture_output=True, timeout=90, check=True)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


def text(value):
    """A header value botocore holds as str or bytes, as str."""
    return value.decode() if isinstance(value, bytes) else value


def crc32_b64(data):
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class AuthTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="auth")

    def test_sigv4_and_sigv2_headers(self):
        sent = []
        self.s3.meta.events.register("before-send.s3.PutObject",
                                     lambda request, **kw: sent.append(request.headers))
        self.s3.put_object(Bucket="auth", Key="v4", Body=b"signed v4")
        self.assertTrue(text(sent[0]["Authorization"]).startswith("AWS4-HMAC-SHA256 "))
        self.assertEqual(self.s3.get_object(Bucket="auth", Key="v4")["Body"].read(),
                         b"signed v4")

        v2 = self.node.client(signature_version="s3")
        sent = []
        v2.meta.events.register("before-send.s3.PutObject",
                                lambda request, **kw: sent.append(request.headers))
        v2.put_object(Bucket="auth", Key="v2 key+", Body=b"signed v2",
                      ContentType="text/plain", Metadata={"a": "b"})
        authorization = text(sent[0]["Authorization"])
        self.assertTrue(authorization.startswith("AWS "), authorization)
        got = v2.get_object(Bucket="auth", Key="v2 key+")
        self.assertEqual((got["Body"].read(), got["Metadata"]), (b"signed v2", {"a": "b"}))
        self.assertEqual([o["Key"] for o in v2.list_objects(Bucket="auth")["Contents"]],
                         ["v2 key+", "v4"])
        v2.delete_object(Bucket="auth", Key="v2 key+")
        v2.head_bucket(Bucket="auth")
        wrong = self.node.client((self.node.credentials()[0], "wrong secret"),
                                 signature_version="s3")
        self.assertS3Error("SignatureDoesNotMatch", 403, wrong.get_object,
                           Bucket="auth", Key="v4")

        # UNSIGNED-PAYLOAD under a SigV4 header signature.
        reply = s3http.request(self.node, "PUT", "/auth/unsigned", body=b"not hashed",
                               payload_hash="UNSIGNED-PAYLOAD")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.s3.get_object(Bucket="auth", Key="unsigned")["Body"].read(),
                         b"not hashed")

    def test_presigned_urls_with_curl(self):
        body = os.urandom(3 * MiB + 11)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(body)
        default = self.s3
        v4 = self.node.client(signature_version="s3v4")
        for name, client in (("default", default), ("v4", v4)):
            key = f"presigned {name}+/file"
            put_url = client.generate_presigned_url(
                "put_object", Params={"Bucket": "auth", "Key": key}, ExpiresIn=300)
            get_url = client.generate_presigned_url(
                "get_object", Params={"Bucket": "auth", "Key": key}, ExpiresIn=300)
            if name == "default":
                self.assertIn("AWSAccessKeyId=", get_url)
            else:
                self.assertIn("X-Amz-Signature=", get_url)
            # curl -T sends Expect: 100-continue for a body this large.
            status, out = curl("-T", path, put_url)
            self.assertEqual(status, 200, out)
            self.assertTrue(self.s3.get_object(Bucket="auth", Key=key)["Body"].read() == body)
            status, out = curl(get_url)
            self.assertEqual(status, 200, out)
            self.assertTrue(out == body, name)
            status, out = curl("--range", "5-14", get_url)
            self.assertEqual((status, out), (206, body[5:15]))
            # ... and for GET only, as S3 has it: HEAD is another method.
            status, out = curl("--head", get_url)
            self.assertEqual(status, 403, out)
            # The URL is for that key and that method only.
            status, out = curl(get_url.replace("/file?", "/other?"))
            self.assertEqual(status, 403)
            self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", out)
            status, out = curl("-X", "DELETE", get_url)
            self.assertEqual(status, 403)
            self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", out)
            self.assertEqual(self.s3.head_object(Bucket="auth", Key=key)["ContentLength"],
                             len(body))
            # A presigned URL with response overrides.
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": "auth", "Key": key,
                                      "ResponseContentType": "text/x-override"})
            status, out = curl("--dump-header", "-", "--range", "0-0", url)
            self.assertEqual(status, 206)
            self.assertIn(b"content-type: text/x-override", out.lower())

    def test_awkward_keys_under_every_signature(self):
        v2 = self.node.client(signature_version="s3")
        v4 = self.node.client(signature_version="s3v4")
        for key in KEYS:
            body = key.encode() + b" body"
            v2.put_object(Bucket="auth", Key=key, Body=body)
            self.assertEqual(v2.get_object(Bucket="auth", Key=key)["Body"].read(), body, key)
            self.assertEqual(self.s3.get_object(Bucket="auth", Key=key)["Body"].read(), body)
            for client in (self.s3, v4):
                url = client.generate_presigned_url(
                    "get_object", Params={"Bucket": "auth", "Key": key}, ExpiresIn=300)
                self.assertEqual(curl("--globoff", "--path-as-is", url), (200, body), key)
            v2.delete_object(Bucket="auth", Key=key)
        self.assertEqual(v2.list_objects(Bucket="auth").get("Contents", []), [])

    def test_presigned_put_with_signed_headers(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"typed body")
        for name, client in (("default", self.s3),
                             ("v4", self.node.client(signature_version="s3v4"))):
            key = f"typed {name}"
            url = client.generate_presigned_url("put_object", Params={
                "Bucket": "auth", "Key": key, "ContentType": "text/x-signed",
                "Metadata": {"origin": "presigned"}})
            if name == "default":
                # SigV2: botocore moves the headers into the query, where
                # they are signed, and they apply as if sent as headers.
                self.assertIn("content-type=text%2Fx-signed", url)
                status, out = curl("-T", path, url)
                self.assertEqual(status, 200, out)
                got = self.s3.get_object(Bucket="auth", Key=key)
                self.assertEqual((got["Body"].read(), got["ContentType"], got["Metadata"]),
                                 (b"typed body", "text/x-signed", {"origin": "presigned"}))
                self.s3.delete_object(Bucket="auth", Key=key)
                # Other values than those signed are refused.
                status, out = curl("-T", path, "-H", "Content-Type: text/x-other", url)
                self.assertEqual(status, 403, out)
                status, out = curl("-T", path, "-H", "x-amz-meta-origin: forged", url)
                self.assertEqual(status, 403, out)
            else:
                # SigV4: they are signed headers, and must be sent as such.
                status, out = curl("-T", path, url)
                self.assertEqual(status, 403, out)
                self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", out)
            self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="auth", Key=key)
            # With the headers sent, both store them.
            status, out = curl("-T", path, "-H", "Content-Type: text/x-signed",
                               "-H", "x-amz-meta-origin: presigned", url)
            self.assertEqual(status, 200, out)
            got = self.s3.get_object(Bucket="auth", Key=key)
            self.assertEqual((got["Body"].read(), got["ContentType"], got["Metadata"]),
                             (b"typed body", "text/x-signed", {"origin": "presigned"}))

    def test_presigned_url_failures(self):
        self.s3.put_object(Bucket="auth", Key="k", Body=b"v")
        # SigV2: Expires in the past.
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": "auth", "Key": "k"}, ExpiresIn=-5)
        status, out = curl(url)
        self.assertEqual(status, 403)
        self.assertIn(b"<Code>AccessDenied</Code>", out)
        # SigV4: signed 2 hours ago for one hour.
        v4 = self.node.client(signature_version="s3v4")
        two_hours_ago = datetime.datetime.utcnow() - datetime.timedelta(hours=2)
        with s3http.signing_clock(two_hours_ago):
            url = v4.generate_presigned_url(
                "get_object", Params={"Bucket": "auth", "Key": "k"}, ExpiresIn=3600)
        status, out = curl(url)
        self.assertEqual(status, 403)
        self.assertIn(b"<Code>AccessDenied</Code>", out)
        self.assertIn(b"expired", out)
        # ...but a URL signed two hours ago for three hours is fine.
        with s3http.signing_clock(two_hours_ago):
            url = v4.generate_presigned_url(
                "get_object", Params={"Bucket": "auth", "Key": "k"}, ExpiresIn=3 * 3600)
        self.assertEqual(curl(url), (200, b"v"))
        # More than seven days.
        url = v4.generate_presigned_url(
            "get_object", Params={"Bucket": "auth", "Key": "k"}, ExpiresIn=3600)
        status, out = curl(url.replace("X-Amz-Expires=3600", "X-Amz-Expires=604801"))
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>AuthorizationQueryParametersError</Code>", out)
        # Wrong secret, unknown key.
        for client_kwargs in ({}, {"signature_version": "s3v4"}):
            wrong = self.node.client((self.node.credentials()[0], "not the secret"),
                                     **client_kwargs)
            url = wrong.generate_presigned_url("get_object",
                                               Params={"Bucket": "auth", "Key": "k"})
            status, out = curl(url)
            self.assertEqual(status, 403)
            self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", out)
            unknown = self.node.client(("Z4UNKNOWNKEY000000", "secret"), **client_kwargs)
            url = unknown.generate_presigned_url("get_object",
                                                 Params={"Bucket": "auth", "Key": "k"})
            status, out = curl(url)
            self.assertEqual(status, 403)
            self.assertIn(b"<Code>InvalidAccessKeyId</Code>", out)

    def test_rejected_signers(self):
        self.s3.put_object(Bucket="auth", Key="k", Body=b"v")
        access, secret = self.node.credentials()
        for config in ({}, {"signature_version": "s3"}):
            wrong = self.node.client(
                (access, secret[:-1] + ("y" if secret.endswith("x") else "x")), **config)
            response = self.assertS3Error("SignatureDoesNotMatch", 403, wrong.get_object,
                                          Bucket="auth", Key="k")
            self.assertEqual(response["Error"]["Resource"], "/auth/k")
            self.assertS3Error("SignatureDoesNotMatch", 403, wrong.put_object,
                               Bucket="auth", Key="new", Body=b"x")
            unknown = self.node.client(("Z4NOSUCHKEY0000000", secret), **config)
            self.assertS3Error("InvalidAccessKeyId", 403, unknown.list_buckets)
            self.assertS3Error("InvalidAccessKeyId", 403, unknown.put_object,
                               Bucket="auth", Key="new", Body=b"x")
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="auth", Key="new")

        anonymous = self.node.client(signature_version=UNSIGNED)
        for call, kwargs in ((anonymous.get_object, {"Bucket": "auth", "Key": "k"}),
                             (anonymous.put_object, {"Bucket": "auth", "Key": "new",
                                                     "Body": b"x"}),
                             (anonymous.list_objects_v2, {"Bucket": "auth"}),
                             (anonymous.list_buckets, {}),
                             (anonymous.delete_object, {"Bucket": "auth", "Key": "k"})):
            self.assertS3Error("AccessDenied", 403, call, **kwargs)
        status, out = curl(f"{self.node.endpoint}/auth/k")
        self.assertEqual(status, 403)
        self.assertIn(b"<Code>AccessDenied</Code>", out)
        self.assertEqual(self.s3.get_object(Bucket="auth", Key="k")["Body"].read(), b"v")

        # A request signed 20 minutes off, either way, by botocore's signer.
        now = datetime.datetime.utcnow()
        for offset in (-20, 20):
            with s3http.signing_clock(now + datetime.timedelta(minutes=offset)):
                headers = s3http.sign(self.node, "PUT", "/auth/skewed", body=b"late")
            reply = s3http.request(self.node, "PUT", "/auth/skewed", headers=headers,
                                   body=b"late", signed=False)
            document = self.assertErrorReply(reply, "RequestTimeTooSkewed", 403)
            self.assertIn("ServerTime", document)
        # Ten minutes off is within bounds.
        with s3http.signing_clock(now - datetime.timedelta(minutes=10)):
            headers = s3http.sign(self.node, "PUT", "/auth/skewed", body=b"ok")
        reply = s3http.request(self.node, "PUT", "/auth/skewed", headers=headers,
                               body=b"ok", signed=False)
        self.assertEqual(reply.status, 200, reply.body)
        # A signed header changed after signing.
        headers = s3http.sign(self.node, "PUT", "/auth/tampered", body=b"x",
                              headers={"x-amz-meta-who": "me"})
        headers["x-amz-meta-who"] = "someone else"
        reply = s3http.request(self.node, "PUT", "/auth/tampered", headers=headers,
                               body=b"x", signed=False)
        self.assertErrorReply(reply, "SignatureDoesNotMatch", 403)
        # An x-amz-* header added without being signed.
        headers = s3http.sign(self.node, "PUT", "/auth/tampered", body=b"x")
        headers["x-amz-meta-extra"] = "unsigned"
        reply = s3http.request(self.node, "PUT", "/auth/tampered", headers=headers,
                               body=b"x", signed=False)
        self.assertErrorReply(reply, "AccessDenied", 403)
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="auth", Key="tampered")
        # Garbage in the Authorization header.
        for value in ("AWS4-HMAC-SHA256 garbage", "Bearer token", "AWS nocolon"):
            reply = s3http.request(self.node, "GET", "/auth/k",
                                   headers={"Authorization": value}, signed=False)
            self.assertGreaterEqual(reply.status, 400)
            self.assertLess(reply.status, 500)
            self.assertErrorReply(reply, reply.error()["Code"], reply.status)

    def chunked_put(self, key, payload, chunk_sizes, mode, tamper=None, trailer_value=None,
                    cut=0, content_encoding="aws-chunked"):
        """PUT ``payload`` as an aws-chunked body built from AWS's spec.

        ``mode``: "signed" (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), "signed-trailer"
        (...-PAYLOAD-TRAILER with a CRC32 trailer) or "unsigned-trailer"
        (STREAMING-UNSIGNED-PAYLOAD-TRAILER). ``tamper(body)`` changes the
        encoded body (keeping its length); ``cut`` bytes are cut off its end,
        with a Content-Length that says so."""
        access, secret = self.node.credentials()
        payload_hash = {"signed": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                        "signed-trailer": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                        "unsigned-trailer": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}[mode]
        headers = {"Content-Encoding": content_encoding,
                   "x-amz-decoded-content-length": str(len(payload))}
        trailer = None
        if mode != "signed":
            headers["x-amz-trailer"] = "x-amz-checksum-crc32"
            trailer = ("x-amz-checksum-crc32", trailer_value or crc32_b64(payload))
        # The length of the framing depends only on the sizes: encode once
        # unsigned-shaped to learn it, then sign with it.
        target = s3http.key_path("auth", key)
        draft = self._encode(payload, chunk_sizes, mode, trailer, "0" * 64, secret,
                             "20000101T000000Z")
        headers["Content-Length"] = str(len(draft) - cut)
        headers = s3http.sign(self.node, "PUT", target, headers=headers,
                              payload_hash=payload_hash)
        seed = headers["Authorization"].rpartition("Signature=")[2]
        body = self._encode(payload, chunk_sizes, mode, trailer, seed, secret,
                            headers["X-Amz-Date"])
        self.assertEqual(len(body), len(draft))
        if tamper is not None:
            body = tamper(body)
        body = body[:len(body) - cut]
        return s3http.request(self.node, "PUT", target, headers=headers, body=body,
                              signed=False)

    @staticmethod
    def _encode(payload, chunk_sizes, mode, trailer, seed, secret, timestamp):
        date = timestamp[:8]
        if mode == "unsigned-trailer":
            return aws_chunked(payload, chunk_sizes, trailer=trailer)[0]
        return aws_chunked(payload, chunk_sizes, seed=seed, key=signing_key(secret, date),
                           timestamp=timestamp, scope=f"{date}/us-east-1/s3/aws4_request",
                           trailer=trailer, trailer_signed=True)[0]

    def test_aws_chunked_uploads(self):
        payload = os.urandom(5 * MiB + 12345)
        sizes = [64 * 1024] * 90
        for mode in ("signed", "signed-trailer", "unsigned-trailer"):
            key = f"chunked {mode}"
            reply = self.chunked_put(key, payload, sizes, mode)
            self.assertEqual(reply.status, 200, reply.body)
            self.assertEqual(reply.headers["etag"], f'"{hashlib.md5(payload).hexdigest()}"')
            got = self.s3.get_object(Bucket="auth", Key=key)
            # The framing never ends up in the object, nor aws-chunked in
            # its Content-Encoding.
            self.assertTrue(got["Body"].read() == payload, mode)
            self.assertEqual(got["ContentLength"], len(payload))
            self.assertNotIn("ContentEncoding", got)
            small = self.chunked_put(key + " small", b"hello chunks", [5], mode)
            self.assertEqual(small.status, 200, small.body)
            self.assertEqual(self.s3.get_object(Bucket="auth", Key=key + " small")["Body"]
                             .read(), b"hello chunks")

        # aws-chunked alongside a real content coding: only the real one is kept.
        reply = self.chunked_put("zipped", b"pretend gzip", [4], "signed",
                                 content_encoding="aws-chunked,gzip")
        self.assertEqual(reply.status, 200, reply.body)
        got = self.s3.get_object(Bucket="auth", Key="zipped")
        self.assertEqual((got["ContentEncoding"], got["Body"].read()), ("gzip", b"pretend gzip"))
        self.s3.delete_object(Bucket="auth", Key="zipped")

        def flip_payload_byte(body):
            index = body.index(b"\r\n") + 2 + 1000
            return body[:index] + bytes([body[index] ^ 1]) + body[index + 1:]

        # A changed byte breaks that chunk's signature: nothing is stored.
        reply = self.chunked_put("bad signed", payload, sizes, "signed",
                                 tamper=flip_payload_byte)
        self.assertErrorReply(reply, "SignatureDoesNotMatch", 403)
        # Without chunk signatures, the trailer's checksum catches it.
        reply = self.chunked_put("bad unsigned", payload, sizes, "unsigned-trailer",
                                 tamper=flip_payload_byte)
        self.assertErrorReply(reply, "BadDigest", 400)
        reply = self.chunked_put("bad trailer", payload, sizes, "unsigned-trailer",
                                 trailer_value=crc32_b64(b"other"))
        self.assertErrorReply(reply, "BadDigest", 400)
        reply = self.chunked_put("bad signed trailer", b"x" * 100, [10], "signed-trailer",
                                 trailer_value=crc32_b64(b"other"))
        self.assertEqual(reply.status // 100, 4, reply.body)
        self.assertIn(reply.error()["Code"], ("BadDigest", "SignatureDoesNotMatch"))

        # A body that ends before its framing does (the closing blank line
        # alone may be missing: some clients leave it out).
        for mode in ("signed", "unsigned-trailer"):
            for cut in (3, 200, 1000):
                reply = self.chunked_put("truncated", b"y" * 5000, [1000], mode, cut=cut)
                self.assertEqual(reply.status // 100, 4, (mode, cut, reply.body))
                self.assertErrorReply(reply, reply.error()["Code"], reply.status)
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket="auth")["Contents"]]
        self.assertEqual(keys, sorted(f"chunked {m}{s}" for m in
                                      ("signed", "signed-trailer", "unsigned-trailer")
                                      for s in ("", " small")))

    def test_expect_100_continue(self):
        body = os.urandom(200_000)
        target = "/auth/continued"
        headers = s3http.sign(self.node, "PUT", target, body=body,
                              headers={"Expect": "100-continue"})
        head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            interim = s.recv(4096)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
            s.sendall(body)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += s.recv(4096)
            self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), reply)
        self.assertTrue(self.s3.get_object(Bucket="auth", Key="continued")["Body"].read()
                        == body)

        # An empty body asked for with Expect: 100 first all the same (the
        # aws CLI v1 misreads the next answer otherwise), then the answer,
        # and the connection carries on.
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            for n, payload in enumerate((b"", b"", b"after")):
                target = f"/auth/empty-{n}"
                headers = s3http.sign(self.node, "PUT", target, body=payload,
                                      headers={"Expect": "100-continue"})
                head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                        f"Content-Length: {len(payload)}"]
                head += [f"{name}: {value}" for name, value in headers.items()]
                s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                answer = b""
                while not answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
                    answer += s.recv(4096)
                s.sendall(payload)
                answer = answer[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
                while not answer.endswith(b"Content-Length: 0\r\n\r\n"):
                    answer += s.recv(4096)
                self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertEqual(self.s3.get_object(Bucket="auth", Key="empty-2")["Body"].read(),
                         b"after")
        self.assertEqual(self.s3.head_object(Bucket="auth", Key="empty-1")["ContentLength"], 0)

        # Refused on its headers: the final answer comes at once, no 100,
        # and the client never has to send the body.
        for target, code in (("/nobucket/x", "NoSuchBucket"), ("/auth/x", "AccessDenied")):
            if code == "AccessDenied":
                extra = {"Expect": "100-continue"}
            else:
                extra = s3http.sign(self.node, "PUT", target, body=body,
                                    headers={"Expect": "100-continue"})
            head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                    f"Content-Length: {len(body)}"]
            head += [f"{name}: {value}" for name, value in extra.items()]
            with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
                s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                answer = b""
                while True:
                    piece = s.recv(65536)
                    if not piece:
                        break
                    answer += piece
            status, response_headers, document = s3http.split_response(answer)
            self.assertFalse(answer.startswith(b"HTTP/1.1 100"), answer)
            self.assertEqual(status, 404 if code == "NoSuchBucket" else 403)
            self.assertIn(f"<Code>{code}</Code>".encode(), document)
            self.assertTrue(response_headers.get("x-amz-request-id"))
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="auth", Key="x")

        # http.client waits for nothing; boto3 sends Expect for PutObject:
        # both paths store the same bytes.
        sent = []
        self.s3.meta.events.register("before-send.s3.PutObject",
                                     lambda request, **kw: sent.append(request.headers))
        self.s3.put_object(Bucket="auth", Key="boto-expect", Body=body)
        self.assertEqual(text(sent[0].get("Expect")), "100-continue")
        self.assertTrue(self.s3.get_object(Bucket="auth", Key="boto-expect")["Body"].read()
                        == body)

    def test_error_documents(self):
        access, secret = self.node.credentials()
        wrong = self.node.client((access, "wrong"))
        unknown = self.node.client(("Z4NOSUCHKEY0000000", secret))
        anonymous = self.node.client(signature_version=UNSIGNED)
        cases = [
            (self.s3.get_object, {"Bucket": "auth", "Key": "missing"}, "NoSuchKey"),
            (self.s3.list_objects_v2, {"Bucket": "missing"}, "NoSuchBucket"),
            (self.s3.create_bucket, {"Bucket": "auth"}, "BucketAlreadyOwnedByYou"),
            (wrong.list_buckets, {}, "SignatureDoesNotMatch"),
            (unknown.list_buckets, {}, "InvalidAccessKeyId"),
            (anonymous.list_buckets, {}, "AccessDenied"),
            (self.s3.list_parts, {"Bucket": "auth", "Key": "k", "UploadId": "x"},
             "NoSuchUpload"),
        ]
        # Captured raw, as the client received them.
        raw = []
        for client in (self.s3, wrong, unknown, anonymous):
            client.meta.events.register(
                "needs-retry", lambda response, **kw: raw.append(response))
        for call, kwargs, code in cases:
            raw.clear()
            error = self.assertRaises(ClientError, call, **kwargs)
            self.assertEqual(error.response["Error"]["Code"], code)
            http_response = raw[0][0]
            reply = s3http.Reply(http_response.status_code,
                                 {k.lower(): v for k, v in http_response.headers.items()},
                                 http_response.content)
            document = self.assertErrorReply(reply, code, reply.status)
            self.assertEqual(reply.headers["content-type"], "application/xml")
            self.assertTrue(document["Resource"].startswith("/"))
