"""Test support for the authentication tests: requests signed by real
clients (botocore, awscrt) turned into RequestViews, and an aws-chunked
body encoder written from AWS's specification, independent of the code
under test.

botocore's clock is pinned for the duration of a test, so its signatures
are reproducible and ``NOW`` is the time they were made.
"""

import calendar
import datetime
import email.utils
import hashlib
import hmac
import io
from dataclasses import replace
from urllib.parse import urlsplit

import functools

import botocore.auth
import botocore.crt.auth
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from z4node.s3.auth import RequestView, authenticate
from z4node.s3.errors import S3Error

ACCESS_KEY = "AKIDZ4NODEEXAMPLE"
SECRET_KEY = "z4/secret+key/EXAMPLE0123456789abcdefgh"
SECRETS = {ACCESS_KEY: SECRET_KEY}

# AWS's documentation examples use these.
AWS_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_SECRETS = {AWS_ACCESS_KEY: AWS_SECRET_KEY}

SIGNED_AT = datetime.datetime(2024, 3, 1, 12, 30, 15)
NOW = float(calendar.timegm(SIGNED_AT.timetuple()))

# Keys that break naive implementations: spaces, +, %, emoji, //, trailing
# slash, reserved and non-ASCII characters.
AWKWARD_KEYS = [
    "plain.txt",
    "with space.txt",
    "plus+sign",
    "percent%20literal",
    "emoji-😀-ok",
    "double//slash",
    "trailing/slash/",
    "café/naïve ünïcödé",
    "reserved !$&'()*,;=:@",
    "tilde~and_under-score.",
    "brackets[]{}<>^`|\\\"#?",
    "./dot/../segments",
]


@functools.cache
def _session():
    # One session for all clients: it caches the service models, which
    # take 0.1 s to load.
    return botocore.session.get_session()


class _RawBody:
    def __init__(self):
        self._stream = io.BytesIO(b"")

    def stream(self, **kwargs):
        yield self._stream.read()

    def read(self, *args, **kwargs):
        return self._stream.read(*args)


class CapturingClient:
    """A boto3 S3 client whose requests are signed for real and kept, not sent."""

    def __init__(self, signature_version="s3v4", endpoint="http://localhost:9670",
                 addressing_style="path", secret=SECRET_KEY, **s3_config):
        config = Config(signature_version=signature_version,
                        s3=dict(addressing_style=addressing_style, **s3_config),
                        retries={"max_attempts": 1})
        self.client = _session().create_client(
            "s3", region_name="us-east-1", endpoint_url=endpoint, config=config,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret)
        self.requests = []
        self.client.meta.events.register("before-send", self._capture)

    def _capture(self, request, **kwargs):
        self.requests.append(request)
        return AWSResponse(request.url, 200, {}, _RawBody())

    def call(self, operation, **params):
        """Make the call; return (RequestView, raw body bytes) of what was sent."""
        getattr(self.client, operation)(**params)
        request = self.requests[-1]
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        return view_from_url(request.method, request.url, request.headers), body or b""

    def presign(self, operation, expires_in=3600, **params):
        return self.client.generate_presigned_url(operation, Params=params, ExpiresIn=expires_in)


def pin_clocks(case, crt=False):
    """For the rest of ``case``, make botocore sign at SIGNED_AT, with its
    pure-Python SigV4 signers or, if ``crt``, with the awscrt-based ones it
    picks when awscrt is installed (as it is wherever aws CLI v2 or the CRT
    transfer manager is)."""

    def get_current_datetime(remove_tzinfo=True):
        return SIGNED_AT if remove_tzinfo else SIGNED_AT.replace(tzinfo=datetime.timezone.utc)

    case.patch(botocore.auth, "get_current_datetime", get_current_datetime)
    case.patch(botocore.crt.auth, "get_current_datetime", get_current_datetime)

    def formatdate(timeval=None, localtime=False, usegmt=False):
        return email.utils.formatdate(NOW if timeval is None else timeval, localtime, usegmt)

    case.patch(botocore.auth, "formatdate", formatdate)

    class Time:
        @staticmethod
        def time():
            return NOW

    case.patch(botocore.auth, "time", Time)
    signers = dict(botocore.auth.AUTH_TYPE_MAPS)
    if crt:
        signers.update(botocore.crt.auth.CRT_AUTH_TYPE_MAPS)
    else:
        signers.update({"s3v4": botocore.auth.S3SigV4Auth, "s3v4-query": botocore.auth.S3SigV4QueryAuth})
    case.patch(botocore.auth, "AUTH_TYPE_MAPS", signers)


def view_from_url(method, url, headers=(), virtual_host_bucket=None):
    """The RequestView of a request for ``url`` as it would reach the server.

    Header values are decoded as ISO-8859-1, as the request layer does; the
    Host header is added as an HTTP client would.
    """
    parts = urlsplit(url)
    target = url[len(parts.scheme) + 3 + len(parts.netloc):]
    path, _, query = target.partition("?")
    lowered = {}
    for name, value in dict(headers).items():
        # http.client sends str values encoded as ISO-8859-1.
        lowered[name.lower()] = value.decode("latin-1") if isinstance(value, bytes) else value
    lowered.setdefault("host", parts.netloc)
    return RequestView(method, path.encode("latin-1"), query.encode("latin-1"), lowered,
                       virtual_host_bucket)


def hmac_sha256(key, message):
    return hmac.new(key, message.encode(), hashlib.sha256)


def signing_key(secret, date, region="us-east-1", service="s3"):
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac_sha256(key, part).digest()
    return key


def aws_chunked(payload, chunk_sizes, seed=None, key=None, timestamp=None, scope=None,
                trailer=None, trailer_signed=False):
    """Encode ``payload`` as aws-chunked, cut after the given chunk sizes
    (the rest forms a last chunk), per AWS's chunked-upload specification.

    With ``seed`` (and ``key``, ``timestamp``, ``scope``) every chunk is
    signed; ``trailer`` is a (name, value) pair sent after the final chunk,
    signed too when ``trailer_signed``. Returns (body, chunk signatures).
    """
    chunks, start = [], 0
    for size in chunk_sizes:
        if payload[start:start + size]:
            chunks.append(payload[start:start + size])
        start += size
    if start < len(payload):
        chunks.append(payload[start:])
    chunks.append(b"")
    out, signatures, previous = bytearray(), [], seed
    for chunk in chunks:
        header = b"%x" % len(chunk)
        if seed is not None:
            previous = hmac_sha256(key, "\n".join([
                "AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, previous,
                hashlib.sha256(b"").hexdigest(), hashlib.sha256(chunk).hexdigest()])).hexdigest()
            signatures.append(previous)
            header += b";chunk-signature=" + previous.encode()
        out += header + b"\r\n"
        if chunk:
            out += chunk + b"\r\n"
    if trailer is not None:
        line = f"{trailer[0]}:{trailer[1]}"
        out += line.encode() + b"\r\n"
        if trailer_signed:
            signature = hmac_sha256(key, "\n".join([
                "AWS4-HMAC-SHA256-TRAILER", timestamp, scope, previous,
                hashlib.sha256((line + "\n").encode()).hexdigest()])).hexdigest()
            signatures.append(signature)
            out += b"x-amz-trailer-signature:" + signature.encode() + b"\r\n"
    out += b"\r\n"
    return bytes(out), signatures


def with_headers(view, **headers):
    """``view`` with headers set (``x_amz_acl=`` for x-amz-acl) or, given None, removed."""
    merged = dict(view.headers)
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return replace(view, headers=merged)


class FailureAssertions:
    """A mixin for test cases: authenticate() must fail with ``code``."""

    def assertFails(self, code, view, secrets=SECRETS, now=NOW):
        error = self.assertRaises(S3Error, authenticate, view, secrets.get, now)
        self.assertEqual(error.code, code, error.message)
        return error
