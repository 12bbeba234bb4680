"""The S3 request pipeline in one process, without a node: every request
ends with an answer even when writing the answer fails; large XML bodies
are parsed on the blocking-work pool; and the parsers that read request
input (integers, XML, digests) refuse bad input with an S3 error, never an
exception of their own."""

import base64
import hashlib
import types
from xml.etree import ElementTree

from botocore.parsers import RestXMLParser
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from z4node.s3 import api as s3api
from z4node.s3 import integers, sse, xml
from z4node.s3.api import Response, S3Api, S3Resource
from z4node.s3.errors import S3Error
from z4node.s3.http import S3Site


class Boom(Exception):
    pass


class _Unprintable:
    def __str__(self):
        raise Boom("a header value that cannot be written")


class _System:
    def secret_for(self, access_key_id):
        return None


def _allow_everything(api, call):
    return succeed(None)


class PipelineTests(TestCase):
    """Requests through S3Site and S3Api over a StringTransport."""

    def setUp(self):
        self.blocking_calls = []
        self.handler_response = Response(200, body=b"ok")
        objects = types.SimpleNamespace(system=_System())

        async def list_buckets(api, call):
            return self.handler_response
        self.api = S3Api(Clock(), objects, {"ListBuckets": list_buckets}, self.run_blocking)
        self.patch(s3api.authorization, "authorize", _allow_everything)
        self.site = S3Site(S3Resource(self.api, None), timeout=None)

    def run_blocking(self, fn, *args):
        self.blocking_calls.append(fn)
        return succeed(fn(*args))

    def exchange(self, data=b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
        """Feed ``data`` to a new connection; (transport, bytes written)."""
        transport = StringTransport()
        protocol = self.site.buildProtocol(None)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return transport, transport.value()

    def assertInternalError(self, raw):
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 500 "), raw)
        self.assertIn(b"x-amz-request-id: ", head)
        document = ElementTree.fromstring(body)
        self.assertEqual(document.findtext("Code"), "InternalError")
        self.assertTrue(document.findtext("RequestId"))

    def test_answers_normally(self):
        _, raw = self.exchange()
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)
        self.assertTrue(raw.endswith(b"\r\n\r\nok"), raw)

    def test_failing_cors_decoration_answers_500(self):
        def decorate(system, call, response):
            raise Boom("decorate failed")
        self.patch(s3api.cors, "decorate", decorate)
        _, raw = self.exchange()
        self.assertInternalError(raw)
        # Logged with its traceback, not left unhandled.
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_failing_send_answers_500(self):
        # _send fails after it started setting headers.
        self.handler_response = Response(200, {"x-amz-meta-a": _Unprintable()}, b"ok")
        _, raw = self.exchange()
        self.assertInternalError(raw)
        self.assertNotIn(b"x-amz-meta-a", raw)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_failing_last_resort_cuts_the_connection(self):
        def decorate(system, call, response):
            raise Boom("decorate failed")

        def fail(*args):
            raise Boom("the last resort failed")
        self.patch(s3api.cors, "decorate", decorate)
        self.patch(self.api, "_send_internal_error", fail)
        transport, raw = self.exchange()
        self.assertEqual(raw, b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 2)

    def test_large_xml_is_parsed_on_the_blocking_pool(self):
        small = b"<Delete><Object><Key>k</Key></Object></Delete>"
        large = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1000 + b"</Delete>"
        self.assertGreater(len(large), self.api.inline_xml_bytes)
        for body, expected_calls in ((small, 0), (large, 1)):
            parsed = self.successResultOf(Deferred.fromCoroutine(
                self.api.parse_xml(body, "Delete")))
            self.assertEqual(parsed.tag, "Delete")
            self.assertEqual(len(self.blocking_calls), expected_calls)
        # Refusals come back from the pool as S3 errors.
        failure = self.failureResultOf(Deferred.fromCoroutine(
            self.api.parse_xml(large.replace(b"</Delete>", b""), "Delete")), S3Error)
        self.assertEqual(failure.value.code, "MalformedXML")


class IntegerTests(TestCase):
    def test_accepts_ascii_digits_within_bounds(self):
        self.assertEqual(integers.non_negative("0", 10), 0)
        self.assertEqual(integers.non_negative("0010", 10), 10)
        self.assertEqual(integers.non_negative(str(integers.INT64_MAX), integers.INT64_MAX),
                         integers.INT64_MAX)

    def test_refuses_everything_else(self):
        for text in (None, "", " 1", "1 ", "+1", "-1", "1_000", "²", "٣", "1.0", "0x10",
                     "11", "9" * 5000, "0" * 33, str(integers.INT64_MAX + 1)):
            self.assertIsNone(integers.non_negative(text, 10 if text == "11" else
                                                    integers.INT64_MAX), repr(text))

    @given(st.text(max_size=40))
    def test_never_raises(self, text):
        value = integers.non_negative(text, integers.INT32_MAX)
        if value is not None:
            self.assertTrue(text.isascii() and text.isdigit())
            self.assertEqual(value, int(text))

    def test_parameter_errors_name_the_argument(self):
        error = self.assertRaises(S3Error, integers.parameter, "²", "max-keys")
        self.assertEqual((error.code, error.status), ("InvalidArgument", 400))
        self.assertEqual(error.extra, {"ArgumentName": "max-keys", "ArgumentValue": "²"})
        self.assertRaises(S3Error, integers.parameter, "0", "partNumber", minimum=1)
        self.assertRaises(S3Error, integers.parameter, str(2 ** 31), "max-keys")


class XmlTests(TestCase):
    def test_unknown_encoding_is_malformed_xml(self):
        body = b'<?xml version="1.0" encoding="no-such-codec"?><Tagging/>'
        error = self.assertRaises(S3Error, xml.parse, body, "Tagging")
        self.assertEqual(error.code, "MalformedXML")

    def test_documents_are_well_formed_whatever_keys_hold(self):
        key = "ctl\x00\x01\x07\x08\x0b\x0c\x1b\x1f\r\n\t&<>\ufffe\uffff-é"
        document = xml.document("Error", [("Code", "NoSuchKey"), ("Key", key)],
                                namespace=None)
        parsed = ElementTree.fromstring(document)
        self.assertEqual(parsed.findtext("Key"),
                         "ctl%00%01%07%08%0B%0C%1B%1F\r\n\t&<>%EF%BF%BE%EF%BF%BF-é")
        # And botocore reads it as an S3 error.
        parsed = RestXMLParser().parse(
            {"status_code": 404, "headers": {}, "body": document}, None)
        self.assertEqual(parsed["Error"]["Code"], "NoSuchKey")


class DigestTests(TestCase):
    def test_non_ascii_sse_c_key_md5_is_invalid_argument(self):
        key = base64.b64encode(b"k" * 32).decode()
        call = types.SimpleNamespace(secure=True, headers={
            sse.CUSTOMER + "algorithm": "AES256", sse.CUSTOMER + "key": key,
            sse.CUSTOMER + "key-md5": "é" * 24})
        error = self.assertRaises(S3Error, sse.customer_key, call)
        self.assertEqual((error.code, error.status), ("InvalidArgument", 400))
        call.headers[sse.CUSTOMER + "key-md5"] = base64.b64encode(
            hashlib.md5(b"k" * 32).digest()).decode()
        self.assertEqual(sse.customer_key(call).key_md5, call.headers[sse.CUSTOMER + "key-md5"])
