"""The S3 HTTP layer without sockets: streaming request bodies, early
dispatch, 100-continue, backpressure and early answers (StringTransport);
range and condition parsing; untrusted XML; routing."""

import time
from urllib.parse import parse_qsl
from xml.etree import ElementTree

from hypothesis import given, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from z4node.s3 import conditions, router, xml
from z4node.s3.errors import S3Error
from z4node.s3.http import MiB, BodyIncomplete, BodyStream, S3Site, UploadBudget
from z4node.storage.meta import Version


class RecordingResource(Resource):
    """Reads the body through BodyStream and records what it saw."""

    isLeaf = True

    def __init__(self, reject=False):
        super().__init__()
        self.requests = []
        self.pieces = []
        self.finished = []
        self.reject = reject

    def render(self, request):
        self.requests.append(request)
        if self.reject:
            request.prepare_close_if_body_unread()
            request.setResponseCode(403)
            return b"denied"
        Deferred.fromCoroutine(self._read(request))
        return NOT_DONE_YET

    async def _read(self, request):
        try:
            async for piece in request.body:
                self.pieces.append(piece)
        except (BodyIncomplete, S3Error) as e:
            self.finished.append(e)
            return
        self.finished.append(b"".join(self.pieces))
        request.write(b"ok")
        request.finish()


def connect(resource, site=None):
    site = site or S3Site(resource, timeout=None)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def error_of(response):
    """(status, S3 error code) of a raw response refused by the channel."""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, ElementTree.fromstring(body).findtext("Code")


class ChannelLimitTests(SynchronousTestCase):
    """What the channel refuses before any handler runs: every refusal an
    S3 error document, then the connection closed."""

    def test_long_request_line_gets_an_answer(self):
        channel, transport = connect(RecordingResource())
        channel.dataReceived(b"GET /b/" + b"k" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(error_of(transport.value()), (400, "RequestHeaderSectionTooLarge"))
        self.assertTrue(transport.disconnecting)

    def test_request_line_arriving_in_pieces_past_the_limit(self):
        channel, transport = connect(RecordingResource())
        channel.dataReceived(b"GET /b/")
        for _ in range(20):
            channel.dataReceived(b"k" * 1000)
        self.assertEqual(error_of(transport.value()), (400, "RequestHeaderSectionTooLarge"))

    def test_headers_too_large_or_too_many(self):
        for headers in (b"X-A: " + b"v" * 10000 + b"\r\nX-B: " + b"v" * 10000 + b"\r\n",
                        b"".join(b"X-%d: v\r\n" % i for i in range(600))):
            resource = RecordingResource()
            channel, transport = connect(resource)
            channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
            self.assertEqual(error_of(transport.value()), (400, "RequestHeaderSectionTooLarge"))
            self.assertTrue(transport.disconnecting)
            self.assertEqual(resource.requests, [])

    def test_unparsable_requests_get_an_s3_error(self):
        for data in (b"NONSENSE\r\n\r\n", b"GET /b/k HTTP/1.1\r\nNo colon\r\n\r\n",
                     b"PUT /b/k HTTP/1.1\r\nContent-Length: x1\r\n\r\n"):
            channel, transport = connect(RecordingResource())
            channel.dataReceived(data)
            self.assertEqual(error_of(transport.value()), (400, "BadRequest"), data)
            self.assertTrue(transport.disconnecting)

    def test_malformed_chunked_body_fails_the_dispatched_handler(self):
        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabc\r\nzz\r\n")
        self.assertIsInstance(resource.finished[0], S3Error)
        self.assertEqual(resource.finished[0].code, "IncompleteBody")
        self.assertFalse(channel.persistent)

    def test_headers_have_a_deadline_however_they_trickle(self):
        clock = Clock()
        resource = RecordingResource()
        site = S3Site(resource, timeout=300, reactor=clock, header_timeout_seconds=30)
        channel, transport = connect(resource, site)
        channel.dataReceived(b"G")
        for byte in b"ET /b/k HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            clock.advance(1)
            channel.dataReceived(bytes([byte]))
            if transport.disconnecting:
                break
        self.assertEqual(error_of(transport.value()), (400, "RequestTimeout"))
        self.assertEqual(clock.seconds(), 30)
        self.assertEqual(resource.requests, [])

    def test_header_deadline_is_per_request(self):
        clock = Clock()
        resource = RecordingResource()
        site = S3Site(resource, timeout=300, reactor=clock, header_timeout_seconds=30)
        channel, transport = connect(resource, site)
        for _ in range(3):
            channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
            clock.advance(29)
        self.assertEqual(len(resource.requests), 3)
        self.assertFalse(transport.disconnecting)

    def test_connections_past_the_maximum_get_503(self):
        site = S3Site(RecordingResource(), timeout=None, max_connections=2)
        channels = [connect(None, site) for _ in range(2)]
        channel, transport = connect(None, site)
        self.assertEqual(error_of(transport.value()), (503, "SlowDown"))
        self.assertTrue(transport.disconnecting)
        channels[0][0].connectionLost(Failure(ConnectionLost("bye")))
        channel, transport = connect(None, site)
        self.assertEqual(transport.value(), b"", "a slot came free")

    def test_slow_body_is_cut_off(self):
        clock = Clock()
        resource = RecordingResource()
        site = S3Site(resource, timeout=300, reactor=clock, body_min_rate=500)
        channel, transport = connect(resource, site)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        for _ in range(2):
            channel.dataReceived(b"x" * 10000)  # 500 bytes/s over a window
            clock.advance(S3Site.body_rate_window_seconds)
        self.assertEqual(resource.finished, [])
        channel.dataReceived(b"x" * 9999)
        clock.advance(S3Site.body_rate_window_seconds)
        self.assertEqual(resource.finished[0].code, "RequestTimeout")


class UploadBudgetTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.budget = UploadBudget(self.clock, 3 * MiB, wait_seconds=10)
        self.budget.per_upload_bytes = 2 * MiB
        self.resource = RecordingResource()
        self.site = S3Site(self.resource, timeout=None, reactor=self.clock,
                           upload_budget=self.budget)

    def put(self, length, expect=False):
        channel, transport = connect(None, self.site)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
                             % (length, b"Expect: 100-continue\r\n" if expect else b""))
        return channel, transport

    def test_shares(self):
        self.assertEqual(self.budget.size_for(1000), 0)
        self.assertEqual(self.budget.size_for(MiB), MiB)
        self.assertEqual(self.budget.size_for(100 * MiB), 2 * MiB)
        self.assertEqual(self.budget.size_for(None), 2 * MiB)

    def test_waits_with_the_socket_paused_then_gets_its_share(self):
        first, _ = self.put(2 * MiB)
        self.assertEqual(self.budget.used, 2 * MiB)
        second, transport = self.put(2 * MiB, expect=True)
        self.assertEqual(transport.producerState, "paused")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertEqual(self.budget.used, 2 * MiB)
        first.dataReceived(b"x" * (2 * MiB))   # the first upload ends
        self.assertEqual(self.budget.used, 2 * MiB, "its share passed to the second")
        self.assertEqual(transport.producerState, "producing")
        self.assertIn(b"100 Continue", transport.value())
        second.dataReceived(b"y" * (2 * MiB))
        self.assertEqual(len(self.resource.finished), 2)
        self.assertIn(b"200 OK", transport.value())
        self.assertEqual(self.budget.used, 0)

    def test_small_bodies_need_no_share(self):
        self.put(2 * MiB)
        self.put(2 * MiB)
        channel, transport = self.put(1000)
        channel.dataReceived(b"z" * 1000)
        self.assertIn(b"200 OK", transport.value())

    def test_slowdown_after_waiting_too_long(self):
        self.put(2 * MiB)
        channel, transport = self.put(2 * MiB)
        self.clock.advance(10)
        self.assertEqual([e.code for e in self.resource.finished], ["SlowDown"])
        self.assertEqual(self.budget.counters, {"waited": 1, "refused": 1})

    def test_a_request_gone_while_waiting_leaves_the_queue(self):
        first, _ = self.put(2 * MiB)
        second, _ = self.put(2 * MiB)
        second.connectionLost(Failure(ConnectionLost("bye")))
        first.connectionLost(Failure(ConnectionLost("bye")))
        self.assertEqual(self.budget.used, 0)
        self.clock.advance(60)
        self.assertEqual(self.budget.used, 0)


class StreamingRequestTests(SynchronousTestCase):
    def test_body_reaches_handler_before_request_completes(self):
        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual(len(resource.requests), 1, "dispatched on headers")
        channel.dataReceived(b"hello")
        self.assertEqual(resource.pieces, [b"hello"])
        self.assertEqual(resource.finished, [])
        channel.dataReceived(b"world")
        self.assertEqual(resource.finished, [b"helloworld"])
        self.assertIn(b"200 OK", transport.value())

    def test_chunked_transfer_encoding_streams_too(self):
        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"3\r\nabc\r\n")
        self.assertEqual(resource.pieces, [b"abc"])
        channel.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(resource.finished, [b"abcde"])

    def test_continue_is_sent_only_when_the_body_is_read(self):
        resource = RecordingResource(reject=True)
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Expect: 100-continue\r\n\r\n")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertIn(b"403", transport.value())
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)

        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Expect: 100-continue\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))

    def test_backpressure_pauses_and_resumes_the_socket(self):
        resource = RecordingResource()
        resource.render = lambda request: (resource.requests.append(request), NOT_DONE_YET)[1]
        channel, transport = connect(resource)
        size = 3 * BodyStream.high_water
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        channel.dataReceived(b"x" * (BodyStream.high_water + 1))
        self.assertEqual(transport.producerState, "paused")
        body = resource.requests[0].body
        pieces = []

        async def read_one():
            pieces.append(await body.__anext__())
        Deferred.fromCoroutine(read_one())
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(pieces[0]), BodyStream.high_water + 1)

    def test_disconnect_mid_body_fails_the_reader(self):
        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        channel.connectionLost(Failure(ConnectionLost("gone")))
        self.assertEqual(len(resource.finished), 1)
        self.assertIsInstance(resource.finished[0], BodyIncomplete)

    def test_early_answer_then_rest_of_body_is_dropped(self):
        resource = RecordingResource(reject=True)
        channel, transport = connect(resource)
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        channel.dataReceived(b"def")
        self.assertIn(b"403", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_node_endpoints_stream_their_body_too(self):
        # /_z4/ resources read the body as S3 handlers do; nothing is
        # buffered (let alone spooled to a temp file) before they run.
        resource = RecordingResource()
        channel, transport = connect(resource)
        channel.dataReceived(b"POST /_z4/rpc/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        self.assertEqual(len(resource.requests), 1, "dispatched on headers")
        self.assertEqual(resource.requests[0].body_length, 10)
        channel.dataReceived(b"hello")
        self.assertEqual(resource.pieces, [b"hello"])
        channel.dataReceived(b"world")
        self.assertEqual(resource.finished, [b"helloworld"])

    def test_x_amz_headers_are_lower_case(self):
        class Meta(Resource):
            isLeaf = True

            def render(self, request):
                request.setHeader(b"x-amz-meta-colour", b"blue")
                return b""
        channel, transport = connect(Meta())
        channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"\r\nx-amz-meta-colour: blue\r\n", transport.value())


def version(etag="abc", modified=1_700_000_000.0):
    from z4node import hlc
    return Version("b", "k", hlc.from_seconds(modified), "null", False, 10, etag,
                   "o", {}, [], b"0123456789")


class RangeTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(conditions.parse_range("bytes=0-4", 10), (0, 4))
        self.assertEqual(conditions.parse_range("bytes=3-", 10), (3, 9))
        self.assertEqual(conditions.parse_range("bytes=-4", 10), (6, 9))
        self.assertEqual(conditions.parse_range("bytes=-40", 10), (0, 9))
        self.assertEqual(conditions.parse_range("bytes=5-400", 10), (5, 9))

    def test_ignored_forms(self):
        for header in ("bytes=a-b", "items=0-1", "bytes=0-1,3-4", "bytes=5-2", "bytes=-", "0-1"):
            self.assertIsNone(conditions.parse_range(header, 10), header)
        self.assertIsNone(conditions.parse_range(None, 10))

    def test_unsatisfiable(self):
        for header, size in (("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)):
            with self.assertRaises(S3Error) as raised:
                conditions.parse_range(header, size)
            self.assertEqual(raised.exception.status, 416)
            self.assertEqual(raised.exception.headers["content-range"], f"bytes */{size}")

    @given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), last=st.integers(0, 20_000))
    def test_satisfiable_ranges_stay_inside_the_object(self, size, first, last):
        try:
            result = conditions.parse_range(f"bytes={first}-{last}", size)
        except S3Error:
            self.assertGreaterEqual(first, size)
            return
        if result is None:
            self.assertLess(last, first)
        else:
            start, end = result
            self.assertEqual(start, first)
            self.assertEqual(end, min(last, size - 1))


class ConditionTests(SynchronousTestCase):
    def test_precedence(self):
        v = version(etag="abc")
        past = "Sat, 01 Jan 2000 00:00:00 GMT"
        future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(2_000_000_000))
        evaluate = conditions.evaluate
        self.assertIsNone(evaluate({}, v))
        self.assertEqual(evaluate({"if-match": '"xyz"'}, v), 412)
        self.assertIsNone(evaluate({"if-match": '"abc"', "if-unmodified-since": past}, v))
        self.assertEqual(evaluate({"if-unmodified-since": past}, v), 412)
        self.assertEqual(evaluate({"if-none-match": '"abc"'}, v), 304)
        self.assertEqual(evaluate({"if-none-match": "*"}, v), 304)
        self.assertIsNone(evaluate({"if-none-match": '"zzz"', "if-modified-since": future}, v))
        self.assertEqual(evaluate({"if-modified-since": future}, v), 304)
        self.assertIsNone(evaluate({"if-modified-since": past}, v))
        self.assertEqual(evaluate({"x-amz-copy-source-if-match": '"no"'}, v,
                                  prefix="x-amz-copy-source-"), 412)


class XmlTests(SynchronousTestCase):
    def test_namespaces_are_stripped(self):
        element = xml.parse(b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                            b"<Object><Key>a&amp;b</Key></Object></Delete>", "Delete")
        self.assertEqual(xml.text(element.find("Object"), "Key"), "a&b")

    def test_entity_expansion_is_refused(self):
        bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
                b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Delete>&b;</Delete>')
        with self.assertRaises(S3Error) as raised:
            xml.parse(bomb, "Delete")
        self.assertEqual(raised.exception.code, "MalformedXML")

    def test_wrong_root_and_garbage(self):
        for body in (b"<Other/>", b"not xml", b"", b"<Delete>"):
            with self.assertRaises(S3Error):
                xml.parse(body, "Delete")

    def test_documents_escape_text(self):
        body = xml.document("R", [("Key", "<a & 'b'>"), ("N", 3), ("T", True), ("Skip", None)])
        self.assertIn(b"<Key>&lt;a &amp; 'b'&gt;</Key><N>3</N><T>true</T>", body)
        self.assertNotIn(b"Skip", body)

    def test_iso8601(self):
        self.assertEqual(xml.iso8601(0.5), "1970-01-01T00:00:00.500Z")


class UploadLimitTests(SynchronousTestCase):
    def test_body_past_the_limit_is_entity_too_large(self):
        from z4node.s3.api import declared_size, limited

        async def body():
            for _ in range(4):
                yield b"x" * 10

        async def consume(limit):
            return [piece async for piece in limited(body(), limit)]

        self.assertEqual(len(self.successResultOf(Deferred.fromCoroutine(consume(40)))), 4)
        failure = self.failureResultOf(Deferred.fromCoroutine(consume(39)), S3Error)
        self.assertEqual(failure.value.code, "EntityTooLarge")
        self.assertEqual(declared_size({"content-length": "7"}), 7)
        self.assertEqual(declared_size({"content-length": "99",
                                        "x-amz-decoded-content-length": "5"}), 5)
        self.assertIsNone(declared_size({"transfer-encoding": "chunked"}))


class RouterTests(SynchronousTestCase):
    @given(st.text(alphabet="ab=&+%2F0é ", max_size=30))
    def test_query_parameters_read_as_parse_qsl(self, text):
        expected = {}
        for name, value in parse_qsl(text, keep_blank_values=True):
            expected.setdefault(name, value)
        self.assertEqual(router.query_parameters(text), expected)

    def test_paths(self):
        self.assertEqual(router.decode_path(b"/"), (None, None))
        self.assertEqual(router.decode_path(b"/b"), ("b", None))
        self.assertEqual(router.decode_path(b"/b/"), ("b", None))
        self.assertEqual(router.decode_path(b"/b//a%20b/%F0%9F%98%80/"), ("b", "/a b/\U0001F600/"))
        with self.assertRaises(S3Error) as raised:
            router.decode_path(b"/b/" + b"k" * 1025)
        self.assertEqual(raised.exception.code, "KeyTooLongError")

    def test_operations(self):
        route = router.route
        self.assertEqual(route("GET", None, None, {}, {}).operation, "ListBuckets")
        self.assertEqual(route("GET", "b", None, {"list-type": "2"}, {}).operation, "ListObjectsV2")
        self.assertEqual(route("POST", "b", None, {"delete": ""}, {}).operation, "DeleteObjects")
        self.assertEqual(route("PUT", "b", "k", {}, {"x-amz-copy-source": "/a/b"}).operation,
                         "CopyObject")
        self.assertEqual(route("PUT", "b", "k", {"partNumber": "1", "uploadId": "u"},
                               {"x-amz-copy-source": "/a/b"}).operation, "UploadPartCopy")
        self.assertEqual(route("POST", "b", "k", {"uploadId": "u"}, {}).operation,
                         "CompleteMultipartUpload")

    def test_access_control_operations(self):
        route = router.route
        for method, query, operation in (
                ("GET", "policy", "GetBucketPolicy"), ("PUT", "policy", "PutBucketPolicy"),
                ("DELETE", "policy", "DeleteBucketPolicy"),
                ("GET", "policyStatus", "GetBucketPolicyStatus"),
                ("GET", "acl", "GetBucketAcl"), ("PUT", "acl", "PutBucketAcl"),
                ("GET", "ownershipControls", "GetBucketOwnershipControls"),
                ("PUT", "ownershipControls", "PutBucketOwnershipControls"),
                ("DELETE", "ownershipControls", "DeleteBucketOwnershipControls")):
            self.assertEqual(route(method, "b", None, {query: ""}, {}).operation, operation)
        self.assertEqual(route("GET", "b", "k", {"acl": ""}, {}).operation, "GetObjectAcl")
        self.assertEqual(route("PUT", "b", "k", {"acl": ""}, {}).operation, "PutObjectAcl")
        for method, bucket, key, query, code in (
                ("POST", "b", None, "policy", "MethodNotAllowed"),
                ("DELETE", "b", None, "acl", "MethodNotAllowed"),
                ("PUT", "b", None, "policyStatus", "MethodNotAllowed"),
                ("DELETE", "b", "k", "acl", "MethodNotAllowed"),
                ("GET", "b", "k", "policy", "InvalidRequest")):
            with self.assertRaises(S3Error) as raised:
                route(method, bucket, key, {query: ""}, {})
            self.assertEqual(raised.exception.code, code)

    def test_data_management_operations(self):
        route = router.route
        cases = [
            ("GET", None, {"versions": ""}, "ListObjectVersions"),
            ("PUT", None, {"versioning": ""}, "PutBucketVersioning"),
            ("GET", None, {"versioning": ""}, "GetBucketVersioning"),
            ("PUT", None, {"tagging": ""}, "PutBucketTagging"),
            ("DELETE", None, {"tagging": ""}, "DeleteBucketTagging"),
            ("PUT", None, {"lifecycle": ""}, "PutBucketLifecycleConfiguration"),
            ("DELETE", None, {"lifecycle": ""}, "DeleteBucketLifecycle"),
            ("GET", None, {"cors": ""}, "GetBucketCors"),
            ("PUT", None, {"object-lock": ""}, "PutObjectLockConfiguration"),
            ("POST", None, {}, "PostObject"),
            ("OPTIONS", None, {}, "PreflightCors"),
            ("OPTIONS", "k", {}, "PreflightCors"),
            ("GET", "k", {"tagging": ""}, "GetObjectTagging"),
            ("PUT", "k", {"tagging": "", "versionId": "v"}, "PutObjectTagging"),
            ("DELETE", "k", {"tagging": ""}, "DeleteObjectTagging"),
            ("PUT", "k", {"retention": ""}, "PutObjectRetention"),
            ("GET", "k", {"legal-hold": ""}, "GetObjectLegalHold"),
            ("GET", "k", {"attributes": ""}, "GetObjectAttributes"),
        ]
        for method, key, query, operation in cases:
            self.assertEqual(route(method, "b", key, query, {}).operation, operation,
                             (method, key, query))
        with self.assertRaises(S3Error) as raised:
            route("DELETE", "b", None, {"versioning": ""}, {})
        self.assertEqual(raised.exception.code, "MethodNotAllowed")

    def test_unimplemented_subresources_are_refused(self):
        for query in ({"notification": ""}, {"website": ""}, {"replication": ""},
                      {"inventory": ""}):
            with self.assertRaises(S3Error) as raised:
                router.route("GET", "b", None, query, {})
            self.assertEqual(raised.exception.code, "NotImplemented")
            self.assertEqual(raised.exception.status, 501)
