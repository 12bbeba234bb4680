"""Raw HTTP against a running node, for what boto3 will not send or hides:
requests signed by botocore's own SigV4 signer but sent with http.client
(exact paths, headers and bodies, chosen clocks), unsigned requests, raw
sockets, and the S3 error documents and headers of the answers.

Only ever talks to 127.0.0.1.
"""

import datetime
import http.client
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock
from urllib.parse import quote
from xml.etree import ElementTree

import botocore.auth
import botocore.crt.auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class Reply:
    status: int
    headers: dict  # lower-case names; repeated headers joined with ","
    body: bytes

    def xml(self):
        return ElementTree.fromstring(self.body)

    def error(self):
        """The <Error> document as a dict of its children's text."""
        root = self.xml()
        assert root.tag == "Error", self.body
        return {child.tag: child.text or "" for child in root}


def key_path(bucket, key=None):
    """The path-style request path for bucket (and key), percent-encoded
    the way botocore encodes it."""
    path = "/" + quote(bucket, safe="")
    if key is not None:
        path += "/" + quote(key, safe="/~")
    return path


@contextmanager
def signing_clock(when):
    """Make botocore's signers sign at ``when`` (a naive UTC datetime)."""
    def now(remove_tzinfo=True):
        return when if remove_tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    with mock.patch.object(botocore.auth, "get_current_datetime", now), \
            mock.patch.object(botocore.crt.auth, "get_current_datetime", now):
        yield


class _FixedPayloadSigner(S3SigV4Auth):
    def __init__(self, credentials, payload_hash):
        super().__init__(credentials, "s3", "us-east-1")
        self._payload_hash = payload_hash

    def payload(self, request):
        return self._payload_hash


def sign(node, method, target, headers=None, body=b"", credentials=None,
         payload_hash=None):
    """Headers for ``target`` (path and query, already encoded) signed with
    botocore's S3SigV4Auth and the node's admin key (or ``credentials``).
    ``payload_hash`` replaces the body's SHA-256 as x-amz-content-sha256
    (``UNSIGNED-PAYLOAD``, ``STREAMING-...`` or a wrong digest)."""
    access, secret = credentials or node.credentials()
    request = AWSRequest(method=method, url=f"{node.endpoint}{target}",
                         headers=dict(headers or {}), data=body)
    credentials = Credentials(access, secret)
    if payload_hash is None:
        signer = S3SigV4Auth(credentials, "s3", "us-east-1")
    else:
        signer = _FixedPayloadSigner(credentials, payload_hash)
    signer.add_auth(request)
    return dict(request.headers.items())


def request(node, method, target, headers=None, body=b"", signed=True,
            credentials=None, payload_hash=None, timeout=30, utf8_headers=False):
    """Send one request with http.client; the Reply. ``target`` is the
    path (and query), sent exactly as given. Header values go out as
    ISO-8859-1 (http.client's way), or with ``utf8_headers`` as UTF-8, the
    bytes botocore's signer signs for a non-ASCII value (and what Go and
    most other clients send). A header value given as a tuple is sent as
    that many header lines, signed as SigV4 reads them: joined by ","."""
    headers = dict(headers or {})
    repeated = {name: value for name, value in headers.items() if isinstance(value, tuple)}
    headers.update({name: ",".join(value) for name, value in repeated.items()})
    if signed:
        headers = sign(node, method, target, headers, body, credentials, payload_hash)
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        names = {name.lower() for name in headers}
        if "host" not in names:
            connection.putheader("Host", f"127.0.0.1:{node.port}")
        if not names & {"content-length", "transfer-encoding"} and (
                body or method in ("PUT", "POST")):
            connection.putheader("Content-Length", str(len(body)))
        for name, value in headers.items():
            for value in repeated.get(name, (value,)):
                if utf8_headers and isinstance(value, str):
                    value = value.encode("utf-8")
                connection.putheader(name, value)
        try:
            connection.endheaders(body if body else None)
        except (BrokenPipeError, ConnectionResetError):
            # The node answered before the whole body was sent (and
            # closed): its answer is still there to read, as urllib3 reads it.
            pass
        response = connection.getresponse()
        data = response.read()
        merged = {}
        for name, value in response.getheaders():
            name = name.lower()
            if utf8_headers:
                # http.client read the bytes as ISO-8859-1.
                value = value.encode("latin-1").decode("utf-8", "replace")
            merged[name] = f"{merged[name]},{value}" if name in merged else value
        return Reply(response.status, merged, data)
    finally:
        connection.close()


def raw_exchange(node, data, read_timeout=10, shutdown_write=False):
    """Write ``data`` on a fresh socket and read until the node closes it
    (or ``read_timeout`` passes); the bytes read."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=read_timeout) as s:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                out += piece
        except socket.timeout:
            pass
        return out


def split_response(raw):
    """A raw HTTP/1.1 response -> (status, lower-case headers, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def texts(element, path):
    """Text of every element matching ``path`` (namespace-qualified by S3_NS)."""
    return [e.text or "" for e in element.findall(path.replace("{s3}", S3_NS))]


class S3Assertions:
    """A mixin for test cases driving a node with boto3."""

    def assertS3Error(self, code, status, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` must fail with S3 error ``code`` and HTTP
        ``status``; the ClientError's response dict."""
        error = self.assertRaises(ClientError, fn, *args, **kwargs)
        response = error.response
        self.assertEqual((response["Error"]["Code"],
                          response["ResponseMetadata"]["HTTPStatusCode"]),
                         (code, status), response)
        self.assertTrue(response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-request-id"))
        return response

    def assertErrorReply(self, reply, code, status):
        """A raw Reply must be S3 error ``code`` with ``status`` and a full
        error document; the document as a dict."""
        self.assertEqual(reply.status, status, reply.body)
        document = reply.error()
        self.assertEqual(document["Code"], code, reply.body)
        for name in ("Message", "Resource", "RequestId"):
            self.assertTrue(document.get(name), f"no {name} in {reply.body!r}")
        self.assertEqual(document["RequestId"], reply.headers.get("x-amz-request-id"))
        return document
