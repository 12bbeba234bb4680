"""Bad input never yields a 500 or a hang, and changes nothing: malformed
and hostile XML bodies, bodies cut off by a client that goes away, broken
HTTP, undecodable paths. After all of it the node still serves, and its log
holds no traceback. And the connection level: keep-alive through every
kind of answer, pipelining."""

import base64
import hashlib
import http.client
import os
import socket
import time

from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions

MiB = 1024 * 1024

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Delete><Object><Key>&lol4;</Key></Object></Delete>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class BadInputTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bad")
        self.s3.put_object(Bucket="bad", Key="keep", Body=b"kept")

    def tearDown(self):
        # Nothing a client sent made the node fail inside.
        log = self.node.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)

    def assertStillServing(self):
        self.assertEqual(self.s3.get_object(Bucket="bad", Key="keep")["Body"].read(), b"kept")

    def keys(self):
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket="bad").get("Contents", [])]

    def test_malformed_xml_bodies(self):
        documents = [
            b"",
            b"not xml at all",
            b"<Delete><Object><Key>keep</Key></Object>",        # unclosed
            b"<Remove><Object><Key>keep</Key></Object></Remove>",  # wrong root
            b"<Delete></Delete>",                               # no objects
            b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",  # no key
            b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
            BILLION_LAUGHS,
            EXTERNAL_ENTITY,
            b"\xff\xfe<\x00D\x00",
        ]
        for document in documents:
            reply = s3http.request(self.node, "POST", "/bad?delete", body=document,
                                   headers={"Content-MD5": md5_b64(document)})
            self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertEqual(self.keys(), ["keep"])

        upload = self.s3.create_multipart_upload(Bucket="bad", Key="mp")["UploadId"]
        etag = self.s3.upload_part(Bucket="bad", Key="mp", UploadId=upload, PartNumber=1,
                                   Body=b"part")["ETag"]
        documents = [
            b"",
            b"garbage",
            b"<CompleteMultipartUpload><Part>",
            b"<Wrong><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></Wrong>",
            b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber>"
            b"<ETag>" + etag.encode() + b"</ETag></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
            b"</CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><ETag>" + etag.encode() + b"</ETag></Part>"
            b"</CompleteMultipartUpload>",
            BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"),
        ]
        for document in documents:
            reply = s3http.request(self.node, "POST", f"/bad/mp?uploadId={upload}",
                                   body=document)
            self.assertErrorReply(reply, "MalformedXML", 400)
        # The upload is untouched and still completes.
        self.s3.complete_multipart_upload(
            Bucket="bad", Key="mp", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        self.assertEqual(self.s3.get_object(Bucket="bad", Key="mp")["Body"].read(), b"part")
        # An XML body far too large is refused without being kept.
        huge = b"<Delete>" + b" " * (3 * MiB) + b"</Delete>"
        reply = s3http.request(self.node, "POST", "/bad?delete", body=huge,
                               headers={"Content-MD5": md5_b64(huge)})
        self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertStillServing()

    def send_partial(self, target, total, sent, extra_headers=None, body=None):
        """Send a signed PUT's headers announcing ``total`` bytes, ``sent``
        of them, then close the socket."""
        body = body if body is not None else os.urandom(total)
        headers = s3http.sign(self.node, "PUT", target, body=body,
                              headers=extra_headers or {})
        head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:sent])
            # Let the node take what was sent before the connection goes.
            time.sleep(0.2)

    def test_client_disconnects_mid_body(self):
        self.s3.put_object(Bucket="bad", Key="overwritten", Body=b"old version")
        cases = [("/bad/new-inline", MiB, MiB // 2),
                 ("/bad/new-chunked", 10 * MiB, 6 * MiB),   # one 4 MiB chunk went to disk
                 ("/bad/overwritten", 10 * MiB, 9 * MiB),
                 ("/bad/tiny", 100, 0)]
        for target, total, sent in cases:
            self.send_partial(target, total, sent)
            self.assertStillServing()
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bad", Key="new-inline")
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bad",
                           Key="new-chunked")
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bad", Key="tiny")
        self.assertEqual(self.s3.get_object(Bucket="bad", Key="overwritten")["Body"].read(),
                         b"old version")
        self.assertEqual(self.keys(), ["keep", "overwritten"])
        self.s3.delete_object(Bucket="bad", Key="overwritten")

        # A part cut off the same way is not a part.
        upload = self.s3.create_multipart_upload(Bucket="bad", Key="mp")["UploadId"]
        self.send_partial(f"/bad/mp?partNumber=1&uploadId={upload}", 6 * MiB, 5 * MiB)
        parts = self.s3.list_parts(Bucket="bad", Key="mp", UploadId=upload).get("Parts", [])
        self.assertEqual(parts, [])

        # A download abandoned half way.
        big = os.urandom(12 * MiB)
        self.s3.put_object(Bucket="bad", Key="big", Body=big)
        for start in (0, 5 * MiB):
            headers = s3http.sign(self.node, "GET", "/bad/big")
            head = ["GET /bad/big HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                    f"Range: bytes={start}-"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
                s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                got = b""
                while len(got) < MiB:
                    got += s.recv(65536)
                self.assertIn(b" 206 ", got[:20])
            time.sleep(0.2)
            self.assertStillServing()
        self.assertTrue(self.s3.get_object(Bucket="bad", Key="big")["Body"].read() == big)

        # While one upload is stalled half way, others go on.
        body = os.urandom(2 * MiB)
        headers = s3http.sign(self.node, "PUT", "/bad/stalled", body=body)
        head = ["PUT /bad/stalled HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=10) as s:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:MiB])
            for n in range(5):
                self.s3.put_object(Bucket="bad", Key=f"meanwhile-{n}", Body=b"x" * 10000)
                self.assertStillServing()
            s.sendall(body[MiB:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(4096)
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(self.s3.get_object(Bucket="bad", Key="stalled")["Body"].read() == body)

    def test_bodies_too_large_are_refused_on_their_headers(self):
        upload = self.s3.create_multipart_upload(Bucket="bad", Key="mp")["UploadId"]
        for target in ("/bad/huge", f"/bad/mp?partNumber=1&uploadId={upload}"):
            # Announced, never sent: the answer comes from the headers alone.
            headers = s3http.sign(self.node, "PUT", target, payload_hash="UNSIGNED-PAYLOAD")
            head = [f"PUT {target} HTTP/1.1", f"Host: 127.0.0.1:{self.node.port}",
                    f"Content-Length: {6 * 1024 ** 3}"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            answer = s3http.raw_exchange(self.node, ("\r\n".join(head) + "\r\n\r\n").encode(),
                                         read_timeout=10)
            status, _, document = s3http.split_response(answer)
            self.assertEqual(status, 400, answer[:300])
            self.assertIn(b"<Code>EntityTooLarge</Code>", document)
        self.assertEqual(self.keys(), ["keep"])
        self.assertEqual(self.s3.list_parts(Bucket="bad", Key="mp",
                                            UploadId=upload).get("Parts", []), [])
        self.assertStillServing()

    def test_broken_http_and_paths(self):
        port = self.node.port
        for raw in (b"GARBAGE\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"PUT /bad/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64)):
            answer = s3http.raw_exchange(self.node, raw, read_timeout=5)
            if answer:
                status = int(answer.split(b" ", 2)[1])
                self.assertEqual(status // 100, 4, answer[:200])
        # Undecodable paths.
        for target in ("/bad/%ff%fe", "/%c3%28/x"):
            reply = s3http.request(self.node, "GET", target)
            self.assertErrorReply(reply, "InvalidURI", 400)
        # A PUT without Content-Length, its body in HTTP chunks: refused
        # (S3 answers 411 or 501) or stored whole, nothing in between.
        headers = s3http.sign(self.node, "PUT", "/bad/no-length", body=b"hello")
        headers["Transfer-Encoding"] = "chunked"
        reply = s3http.request(self.node, "PUT", "/bad/no-length", headers=headers,
                               body=b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", signed=False)
        self.assertLess(reply.status, 500, reply.body)
        if reply.status == 200:
            self.assertEqual(self.s3.get_object(Bucket="bad", Key="no-length")["Body"].read(),
                             b"hello")
            self.s3.delete_object(Bucket="bad", Key="no-length")
        else:
            self.assertErrorReply(reply, reply.error()["Code"], reply.status)
        self.assertEqual(self.keys(), ["keep"])
        self.assertEqual(port, self.node.port)
        self.assertStillServing()


class ConnectionTests(S3Assertions, TestCase):
    """Responses are framed right, so a kept-alive connection carries on
    through successes, errors, HEADs, 204s, 206s and 304s, and pipelined
    requests are answered in order."""

    def test_keep_alive_through_every_kind_of_answer(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="conn")
        etag = s3.put_object(Bucket="conn", Key="k", Body=b"0123456789")["ETag"]
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        self.addCleanup(connection.close)
        steps = [
            ("PUT", "/conn/new", {}, b"body", 200, None),
            ("GET", "/conn/k", {}, b"", 200, b"0123456789"),
            ("HEAD", "/conn/k", {}, b"", 200, b""),
            ("GET", "/conn/k", {"Range": "bytes=2-4"}, b"", 206, b"234"),
            ("GET", "/conn/k", {"If-None-Match": etag}, b"", 304, b""),
            ("GET", "/conn/k", {"If-Match": '"x"'}, b"", 412, None),
            ("GET", "/conn/k", {"Range": "bytes=50-"}, b"", 416, None),
            ("GET", "/conn/missing", {}, b"", 404, None),
            ("HEAD", "/conn/missing", {}, b"", 404, b""),
            ("DELETE", "/conn/new", {}, b"", 204, b""),
            ("GET", "/conn?list-type=2", {}, b"", 200, None),
            ("GET", "/conn?website", {}, b"", 501, None),
            ("GET", "/conn/k", {}, b"", 200, b"0123456789"),
        ]
        sock = None
        for method, target, extra, body, status, expected in steps:
            headers = s3http.sign(node, method, target, headers=extra, body=body)
            connection.request(method, target, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.assertEqual(response.status, status, (method, target, data))
            self.assertTrue(response.getheader("x-amz-request-id"))
            if expected is not None:
                self.assertEqual(data, expected, (method, target))
            if status >= 400 and method != "HEAD":
                self.assertIn(b"<Error>", data)
            self.assertNotEqual((response.getheader("connection") or "").lower(), "close",
                                (method, target))
            if sock is None:
                sock = connection.sock
            self.assertIs(connection.sock, sock, "the connection was not kept")

    def test_pipelined_requests(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="pipe")
        for n in range(3):
            s3.put_object(Bucket="pipe", Key=f"k{n}", Body=f"body {n}".encode() * 1000)
        raw = b""
        for n in (0, 1, 2, 9):
            target = f"/pipe/k{n}"
            headers = s3http.sign(node, "GET", target)
            raw += (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    + ("Connection: close\r\n" if n == 9 else "") + "\r\n").encode()
        answer = s3http.raw_exchange(node, raw)
        for n in (0, 1, 2):
            status, headers, rest = s3http.split_response(answer)
            self.assertEqual(status, 200)
            length = int(headers["content-length"])
            self.assertEqual(rest[:length], f"body {n}".encode() * 1000)
            answer = rest[length:]
        status, headers, rest = s3http.split_response(answer)
        self.assertEqual(status, 404)
        self.assertIn(b"<Code>NoSuchKey</Code>", rest)
