"""The S3 request pipeline: authenticate, route, authorize, run the
handler, write the response. Every failure becomes an S3 error document
here and nowhere else: S3Error as it is, the object layer's errors by their
code, anything unexpected as a logged InternalError (never a traceback).
"""

import base64
import binascii
import hashlib
import hmac
import itertools
import os
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from z4node.objects import checksums
from z4node.objects.errors import ObjectError
from z4node.s3 import auth, authorization, cors, integers, router, sigv4, xml
from z4node.s3.chunked import AwsChunkedDecoder, is_aws_chunked
from z4node.s3.errors import S3Error
from z4node.s3.http import BodyIncomplete, ResponseWriter

log = Logger()

# Operations authorized inside their handler: a POST upload is signed by its
# form fields, which only its handler reads; it then asks
# ``authorization.authorize`` like every other request.
SELF_AUTHORIZING = frozenset({"PostObject"})


@dataclass
class Response:
    status: int = 200
    # Header values are wire strings, as request headers are read: one
    # character per byte (ISO-8859-1), so stored header values go back out
    # as the very bytes that came in (see header_value).
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    # An async iterable of bytes sent after the headers; Content-Length
    # must then be in headers.
    stream: object = None


@dataclass
class S3Call:
    """One S3 request, parsed and authenticated."""

    request: object
    request_id: str
    method: str
    raw_path: bytes
    query: dict
    headers: dict
    bucket: str | None = None
    key: str | None = None
    operation: str | None = None
    access_key: object = None
    credentials: object = None
    raw_query: bytes = b""
    # The headers as signatures cover them (``headers`` but for repeated
    # headers, joined by "," here and by ", " there).
    signed_headers: dict = field(default_factory=dict)
    # The bucket named by the Host header (virtual-host style), if any.
    host_bucket: str | None = None
    # Set by authorization.authorize: the condition keys of the request
    # (None when no decision needed them) and the Decision taken.
    access_context: dict | None = None
    decision: object = None
    # Came over TLS: to this node, or to a trusted proxy that said so.
    secure: bool = False
    # The S3 error code answered, if any (for the server access log).
    error_code: str | None = None

    @property
    def resource(self):
        if self.bucket is None:
            return "/"
        return f"/{self.bucket}/{self.key}" if self.key is not None else f"/{self.bucket}"


def header_value(text):
    """A Unicode string (from a query parameter, say) as a wire string:
    its UTF-8 bytes, one character per byte."""
    return text.encode("utf-8").decode("latin-1")


def wire_bytes(value):
    value = str(value)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        # Not a wire string after all: send it as UTF-8 rather than fail.
        return value.encode("utf-8")


def http_date(seconds):
    return formatdate(seconds, usegmt=True)


def object_error(e):
    """The S3 error for an object-layer refusal. A refusal about a delete
    marker names it, as S3 does: ``x-amz-delete-marker`` and its version id
    (and, for a version id naming a marker, the method that would work)."""
    headers = {}
    extra = {}
    version = e.version
    if version is not None and version.delete_marker:
        headers["x-amz-delete-marker"] = "true"
        headers["x-amz-version-id"] = version.version_id
        if e.code == "MethodNotAllowed":
            headers["allow"] = "DELETE"
            headers["last-modified"] = http_date(version.last_modified)
    if e.argument is not None:
        extra = {"ArgumentName": e.argument[0], "ArgumentValue": e.argument[1]}
    return S3Error(e.code, e.message, extra=extra, headers=headers)


def error_response(error, call_resource, request_id, method):
    status = error.status
    headers = dict(error.headers)
    if method == "HEAD":
        return Response(status, headers)
    children = [("Code", error.code), ("Message", error.message)]
    children.extend(error.extra.items())
    children.append(("Resource", error.resource or call_resource))
    children.append(("RequestId", request_id))
    headers["content-type"] = "application/xml"
    return Response(status, headers, xml.document("Error", children, namespace=None))


def _apply_query_headers(call):
    """A SigV2 presigned URL may carry x-amz-*, Content-Type and Content-MD5
    as query parameters (botocore moves them there); they are signed, so
    they count as the request's headers. A header actually sent wins, as
    it does when the signature is checked (``sigv2.verify_query``)."""
    for name, value in sigv4.parse_query(call.raw_query):
        name = name.lower()
        if (name.startswith("x-amz-") or name in ("content-type", "content-md5")) \
                and name not in call.headers:
            call.headers[name] = (value or "").strip()


class S3Api:
    """Runs S3 requests against an ObjectService."""

    # Bodies read whole into memory (XML documents) are capped here; S3's
    # largest such document (DeleteObjects with 1,000 keys) is far smaller.
    max_xml_body = 2 * 1024 * 1024
    # S3 takes at most 5 GiB in one request (PutObject, UploadPart); larger
    # objects go through multipart.
    max_upload_bytes = 5 * 1024 ** 3
    # XML bodies up to this size are parsed on the reactor thread, larger
    # ones on the blocking-work pool. Measured on the 2-core test box, for
    # the worst case (one empty element per 4 bytes): 16 KiB parse in 7.9
    # ms, 64 KiB in 20 ms, 2 MiB in 0.8 s; a round trip to the pool costs
    # 0.3 ms. At 4 KiB the reactor stalls 2 ms at most, and configuration
    # documents (tags, versioning, CORS) stay inline.
    inline_xml_bytes = 4 * 1024
    region = "us-east-1"

    def __init__(self, clock, objects, handlers, run_blocking, node_id="z4", debug=False,
                 domains=(), trusted_proxies=frozenset(), answered=None):
        """``run_blocking(fn, *args)`` runs CPU-bound work (parsing large
        bodies) on a bounded thread pool and returns a Deferred.

        ``answered(request, call, request_id, status, bytes_in, bytes_out,
        seconds)``, if given, is told of every request once it is over
        (metrics, the access log); ``call`` is None for a request that did
        not parse, ``status`` None if the client went away unanswered."""
        self.answered = answered
        self.clock = clock
        self._run_blocking = run_blocking
        self.debug = debug
        # Virtual-host-style requests name the bucket in the Host header
        # under one of these domains; every other request is path style.
        self.domains = tuple(d.lower().strip(".") for d in domains)
        self.trusted_proxies = frozenset(trusted_proxies)
        self.objects = objects
        self.system = objects.system
        self._handlers = handlers
        self._ids = itertools.count(1)
        self._id_prefix = hashlib.sha256(
            node_id.encode() + os.urandom(8)).hexdigest()[:4].upper()

    def new_request_id(self):
        return f"{self._id_prefix}{next(self._ids):012X}"

    async def handle(self, request):
        started = self.clock.seconds()
        request_id = self.new_request_id()
        call, status = await self._answer(request, request_id)
        if self.answered is None:
            return
        try:
            # Bytes as they went over the wire: the body as received
            # (aws-chunked framing included), the response body as sent.
            self.answered(request, call, request_id, status, request.body.received,
                          request.sentLength, self.clock.seconds() - started)
        except Exception:
            # The request is answered: a failed count or log line must
            # not reach the leaf, which would cut the connection.
            log.failure("accounting for request {rid} failed", rid=request_id)

    async def _answer(self, request, request_id):
        """Answer ``request``: (its S3Call or None if it did not parse, the
        status sent, or None if the client went away first)."""
        method = request.method.decode("ascii", "replace").upper()
        resource = "/"
        call = None
        try:
            call = self._parse(request, request_id, method)
            resource = call.resource
            if method != "OPTIONS":
                # A CORS preflight is unsigned: browsers send no credentials.
                self._authenticate(call)
            endpoint = router.route(method, call.bucket, call.key, call.query,
                                    call.headers)
            call.operation = endpoint.operation
            if call.operation not in SELF_AUTHORIZING:
                await authorization.authorize(self, call)
            response = await self._handlers[call.operation](self, call)
        except S3Error as e:
            error = e
        except ObjectError as e:
            error = object_error(e)
        except BodyIncomplete:
            if request.gone:
                return call, None
            error = S3Error("IncompleteBody")
        except Exception:
            log.failure("S3 {method} {resource} failed (request {rid})",
                        method=method, resource=resource, rid=request_id)
            error = S3Error("InternalError")
        else:
            error = None
        if error is not None:
            response = error_response(error, resource, request_id, method)
            if call is not None:
                call.error_code = error.code
        try:
            if call is not None and call.operation != "PreflightCors":
                cors.decorate(self.system, call, response)
            await self.send(request, request_id, response)
        except Exception:
            log.failure("answering S3 {method} {resource} failed (request {rid})",
                        method=method, resource=resource, rid=request_id)
            self._send_internal_error(request, request_id, method, resource)
            return call, 500
        if self.debug:
            # Path and status only: query strings can carry signatures.
            log.info("{rid} {method} {resource} {operation} -> {status}",
                     rid=request_id, method=method, resource=resource,
                     operation=call.operation if call else None, status=response.status)
        return call, None if request.gone else response.status

    def _parse(self, request, request_id, method):
        raw_path, _, raw_query = request.uri.partition(b"?")
        try:
            query_text = raw_query.decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI") from None
        query = router.query_parameters(query_text)
        headers = {}
        signed = None
        for name, values in request.requestHeaders.getAllRawHeaders():
            name = name.decode("latin-1").lower()
            if len(values) == 1:
                headers[name] = values[0].decode("latin-1")
                continue
            # A repeated header reads as one, its values joined by ", " (as
            # HTTP and S3 clients join them); signatures cover them joined
            # by a bare ",", SigV4's canonical form.
            headers[name] = b", ".join(values).decode("latin-1")
            signed = signed or {}
            signed[name] = b",".join(values).decode("latin-1")
        call = S3Call(request, request_id, method, raw_path, query, headers)
        call.signed_headers = {**headers, **signed} if signed else headers
        call.raw_query = raw_query
        call.host_bucket = router.host_bucket(headers.get("host"), self.domains)
        call.bucket, call.key = router.decode_path(raw_path, call.host_bucket)
        call.secure = self.is_secure(request, headers)
        return call

    def is_secure(self, request, headers):
        """Whether the request came over TLS: straight to this node, or to a
        reverse proxy named by --trusted-proxy that says so (``headers``:
        lower-case names; only ``x-forwarded-proto`` is read)."""
        if request.isSecure():
            return True
        if not self.trusted_proxies:
            return False
        peer = getattr(request.getClientAddress(), "host", None)
        return (peer in self.trusted_proxies
                and headers.get("x-forwarded-proto", "").strip().lower() == "https")

    def _authenticate(self, call):
        view = auth.RequestView(call.method, call.raw_path, call.raw_query,
                                call.signed_headers, virtual_host_bucket=call.host_bucket)
        try:
            credentials = auth.authenticate(view, self.system.secret_for,
                                            self.clock.seconds())
        except S3Error as e:
            if e.code == "InvalidAccessKeyId" and self._signed_by_deleted_key(call):
                # A presigned URL outlives nothing: once its key is
                # deleted the URL is denied, as any unauthorized request.
                raise S3Error("AccessDenied") from None
            raise
        call.credentials = credentials
        if credentials is not None:
            call.access_key = self.system.key_by_id(credentials.access_key_id)
            if call.access_key is None:
                raise S3Error("InvalidAccessKeyId")
            if credentials.presigned and credentials.signature_version == 2:
                _apply_query_headers(call)

    def _signed_by_deleted_key(self, call):
        """Whether a presigned URL names an access key that was deleted."""
        for name, value in parse_qsl(call.raw_query.decode("utf-8", "replace")):
            if name == "X-Amz-Credential":
                return self.system.key_was_deleted(value.split("/", 1)[0])
            if name == "AWSAccessKeyId":
                return self.system.key_was_deleted(value)
        return False

    async def send(self, request, request_id, response):
        """Write ``response`` (a :class:`Response`) to ``request``: the
        headers S3 sends, then the body or its stream, with backpressure.
        The console sends the downloads it runs through the handlers so."""
        if request.gone:
            return
        request.prepare_close_if_body_unread()
        request.setResponseCode(response.status)
        headers = request.responseHeaders
        headers.setRawHeaders(b"x-amz-request-id", [request_id.encode()])
        headers.setRawHeaders(b"x-amz-id-2", [request_id.encode()])
        headers.setRawHeaders(b"server", [b"z4node"])
        headers.removeHeader(b"content-type")
        for name, value in response.headers.items():
            headers.setRawHeaders(name.encode("latin-1"), [wire_bytes(value)])
        if response.stream is None:
            if response.status not in (204, 304) and "content-length" not in response.headers:
                headers.setRawHeaders(b"content-length",
                                      [str(len(response.body)).encode()])
            if response.body and request.method != b"HEAD":
                request.write(response.body)
            request.finish()
            return
        writer = ResponseWriter(request)
        try:
            async for piece in response.stream:
                await writer.write(piece)
        except BodyIncomplete:
            return
        except Exception:
            # Headers are out: the only honest signal left is to cut the
            # connection before the promised length.
            log.failure("streaming {uri} failed (request {rid})",
                        uri=request.uri, rid=request_id)
            writer.close()
            request.channel.transport.abortConnection()
            return
        writer.close()
        if not request.gone:
            request.finish()

    def _send_internal_error(self, request, request_id, method, resource):
        """The last resort when writing an answer failed: a bare
        InternalError if nothing went out yet, else cutting the connection
        (a client must never wait for an answer that will not come)."""
        if request.gone or request.finished:
            return
        if request.startedWriting:
            request.channel.transport.abortConnection()
            return
        response = error_response(S3Error("InternalError"), resource, request_id, method)
        request.responseHeaders = Headers()
        request.prepare_close_if_body_unread()
        request.setResponseCode(response.status)
        request.responseHeaders.setRawHeaders(b"x-amz-request-id", [request_id.encode()])
        for name, value in response.headers.items():
            request.responseHeaders.setRawHeaders(name.encode(), [value.encode()])
        request.responseHeaders.setRawHeaders(b"content-length",
                                              [str(len(response.body)).encode()])
        request.write(response.body)
        request.finish()

    # -- request bodies ------------------------------------------------------

    def body_pipeline(self, call, checksum_headers=True):
        """The decoded body of a call, the hashers to feed with it, and a
        ``verify(stored)`` that raises unless every digest the client sent
        (payload SHA-256, Content-MD5, x-amz-checksum-*, trailers) matches.
        Without ``checksum_headers`` the x-amz-checksum-* headers are left
        alone: CompleteMultipartUpload's describe the object, not the body."""
        headers = call.headers
        credentials = call.credentials
        declared = declared_size(headers)
        if declared is not None and declared > self.max_upload_bytes:
            raise S3Error("EntityTooLarge")
        body = limited(call.request.body, self.max_upload_bytes)
        hashers = []
        checks = []
        found = {}
        if is_aws_chunked(headers):
            # Anonymous uploads (allowed by a policy or ACL) come framed
            # too: botocore sends STREAMING-UNSIGNED-PAYLOAD-TRAILER.
            decoder = AwsChunkedDecoder(credentials, headers)
            body = _decode_chunked(body, decoder, found)
        elif (credentials is not None and credentials.signature_version == 4
              and len(credentials.payload_hash) == 64):
            expected = credentials.payload_hash.lower()
            sha256 = hashlib.sha256()
            hashers.append(sha256)

            def check_payload(_):
                if not sigv4.same_signature(sha256.hexdigest(), expected):
                    raise S3Error("XAmzContentSHA256Mismatch")
            checks.append(check_payload)
        content_md5 = headers.get("content-md5")
        if content_md5 is not None:
            try:
                wanted = base64.b64decode(content_md5, validate=True)
            except (binascii.Error, ValueError):
                raise S3Error("InvalidDigest") from None
            if len(wanted) != 16:
                raise S3Error("InvalidDigest")

            def check_md5(stored):
                if not hmac.compare_digest(stored.md5, wanted):
                    raise S3Error("BadDigest")
            checks.append(check_md5)
        for name, value in headers.items() if checksum_headers else ():
            if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type" \
                    and name != "x-amz-checksum-algorithm":
                algorithm = checksums.algorithm_from_header(name)
                hasher = checksums.new_checksum(algorithm)
                hashers.append(hasher)
                found[algorithm] = value

                def check_sum(_, hasher=hasher, value=value, algorithm=algorithm):
                    if not sigv4.same_signature(hasher.b64(), value):
                        raise S3Error("BadDigest", f"The {algorithm} you specified"
                                      " did not match the calculated checksum.")
                checks.append(check_sum)

        def verify(stored):
            for check in checks:
                check(stored)
        return body, hashers, verify, found

    async def parse_xml(self, body, root):
        """``xml.parse(body, root)``, off the reactor thread for a body
        large enough to stall it (a 2 MiB document takes 0.8 s)."""
        if len(body) <= self.inline_xml_bytes:
            return xml.parse(body, root)
        return await self._run_blocking(xml.parse, body, root)


def declared_size(headers):
    """The body size a request announces (the decoded size for aws-chunked)."""
    for name in ("x-amz-decoded-content-length", "content-length"):
        size = integers.non_negative(headers.get(name), integers.INT64_MAX)
        if size is not None:
            return size
    return None


async def limited(body, limit):
    """``body``, refused with EntityTooLarge once it passes ``limit`` bytes
    (a chunked upload announces no size)."""
    total = 0
    async for piece in body:
        total += len(piece)
        if total > limit:
            raise S3Error("EntityTooLarge")
        yield piece


async def _decode_chunked(body, decoder, found):
    async for raw in body:
        for piece in decoder.feed(raw):
            yield piece
    trailers = decoder.finish()
    for name, value in trailers.items():
        if name.startswith("x-amz-checksum-"):
            found[checksums.algorithm_from_header(name)] = value


class S3Resource(Resource):
    """The root of the HTTP tree: ``/_z4/...`` goes to the node's own
    endpoints, ``/metrics`` to the metrics resource when it claims the
    request (an unsigned GET: see ``web.metrics``), every other path is an
    S3 request."""

    def __init__(self, api, z4_resource, metrics_resource=None):
        super().__init__()
        self._leaf = _S3Leaf(api)
        self._z4 = z4_resource
        self._metrics = metrics_resource

    def getChildWithDefault(self, name, request):
        if name == b"_z4" and self._z4 is not None:
            return self._z4
        if name == b"metrics" and self._metrics is not None \
                and self._metrics.claims(request):
            return self._metrics
        return self._leaf


class _S3Leaf(Resource):
    isLeaf = True

    def __init__(self, api):
        super().__init__()
        self._api = api

    def render(self, request):
        Deferred.fromCoroutine(self._api.handle(request)).addErrback(
            self._unanswered, request)
        return NOT_DONE_YET

    @staticmethod
    def _unanswered(failure, request):
        # handle() answers every request itself; should even its last
        # resort fail, the failure is logged and the connection cut rather
        # than left waiting, and nothing stays an unhandled error.
        log.failure("S3 request {uri} left unanswered", failure, uri=request.uri)
        if not request.gone:
            request.channel.transport.abortConnection()
