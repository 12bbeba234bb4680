"""AWS Signature Version 4 as S3 uses it: the ``Authorization:
AWS4-HMAC-SHA256 ...`` header, presigned URLs (``X-Amz-Algorithm`` and
friends), and the chain of signatures over an aws-chunked body
(:class:`ChunkSigner`; the body itself is decoded in ``chunked``).

This module owns the canonical request, the string to sign, signing keys and
their cache, and AWS's URI-encoding rules (SigV2 borrows the latter). It is
sans-IO: it reads a request view and the time it is handed, and answers or
raises :class:`S3Error`. Which key may do what is not its business.

Strings here stand for bytes. Header values arrive decoded from the wire as
ISO-8859-1 and query parameters are percent-decoded to bytes and then decoded
the same way, so encoding a string to sign as ISO-8859-1 gives back exactly
the bytes the client signed, whatever charset it used.
"""

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote_from_bytes, unquote, unquote_to_bytes

from z4node.s3 import integers
from z4node.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# AWS rejects header-signed requests whose time is further than this from the
# server's, and presigned URLs dated further than this in the future.
MAX_SKEW_SECONDS = 15 * 60
# X-Amz-Expires may not exceed seven days (AWS's limit for SigV4 presigning).
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

_PAYLOAD_LITERALS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER})
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")
_DATE8 = re.compile(r"\d{8}")
_BLANK_RUNS = re.compile(r"[ \t]+")
_RESERVED = re.compile(r"[^A-Za-z0-9_.~-]")

_QUERY_REQUIRED = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
                   "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
_QUERY_AUTH = frozenset(_QUERY_REQUIRED) | {"X-Amz-Security-Token"}


# -- encoding ---------------------------------------------------------------

def parse_query(raw_query):
    """``b"a=1&b&c=%20"`` -> ``[("a", "1"), ("b", None), ("c", " ")]``.

    Names and values are percent-decoded to bytes, then decoded as
    ISO-8859-1 (see the module docstring). ``None`` marks a parameter written
    without ``=``, which SigV2 signs differently from an empty value. A ``+``
    stays a ``+``: S3 URLs are not form-encoded.
    """
    params = []
    for part in raw_query.decode("latin-1").split("&"):
        if not part:
            continue
        name, equals, value = part.partition("=")
        params.append((_percent_decode(name), _percent_decode(value) if equals else None))
    return params


def _percent_decode(text):
    # One char per byte both ways (ISO-8859-1), so this is the bytes'
    # percent-decoding; the test spares the call where there is no escape.
    return unquote(text, encoding="latin-1") if "%" in text else text


def uri_encode(value):
    """AWS's UriEncode of a byte-string-as-str: A-Z a-z 0-9 - _ . ~ kept,
    every other byte as uppercase %XX."""
    return _RESERVED.sub(_percent_encode, value)


def _percent_encode(match):
    return "%%%02X" % ord(match.group())


def canonical_uri(raw_path):
    """The path as SigV4 signs it for S3: percent-decoded, then each byte
    re-encoded once. S3 does not normalize paths, so ``//``, ``.`` and
    ``..`` segments and a trailing slash are kept as they are."""
    return quote_from_bytes(unquote_to_bytes(raw_path), safe="/") or "/"


def canonical_query(params, exclude=None):
    """Each name and value re-encoded, sorted by name then value, joined
    with ``&``; ``exclude`` names a parameter to leave out (a presigned
    URL's own X-Amz-Signature)."""
    pairs = sorted((uri_encode(name), uri_encode(value or ""))
                   for name, value in params if name != exclude)
    return "&".join([f"{name}={value}" for name, value in pairs])


def _trimall(value):
    # SigV4's Trimall: strip, and squeeze runs of spaces to one. Only ASCII
    # blanks count: str.split() would also eat \xa0 and \x85, which are
    # ordinary bytes of UTF-8 text seen through ISO-8859-1.
    value = value.strip(" \t")
    if "  " in value or "\t" in value:
        value = _BLANK_RUNS.sub(" ", value)
    return value


# -- time -------------------------------------------------------------------

def parse_amz_date(value):
    """``20130524T000000Z`` -> unix seconds, or None if it is not one."""
    match = _AMZ_DATE.fullmatch(value)
    if match is None:
        return None
    try:
        return datetime(*map(int, match.groups()), tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def parse_http_date(value):
    """An HTTP ``Date`` (RFC 7231 and the older forms) -> unix seconds, or
    None if it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # RFC 5322's "-0000" zone: a UTC time from a sender not saying where it is.
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def iso8601(seconds):
    """Unix seconds -> ``2013-05-24T00:00:00Z``, as AWS writes times in error documents."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def check_skew(request_time, now):
    """Refuse a header-signed request whose time is too far from ours."""
    if abs(now - request_time) > MAX_SKEW_SECONDS:
        raise S3Error("RequestTimeTooSkewed", extra={
            "RequestTime": iso8601(request_time),
            "ServerTime": iso8601(now),
            "MaxAllowedSkewMilliseconds": str(MAX_SKEW_SECONDS * 1000),
        })


# -- signing ----------------------------------------------------------------

def same_signature(expected, provided):
    """Constant-time comparison of a signature or digest we computed (ASCII
    text) with the one the client sent, which may hold any character:
    ``hmac.compare_digest`` raises TypeError on non-ASCII ``str``, so both
    are compared as bytes."""
    # "replace": a provided string is a decoding of wire bytes and always
    # encodes; should a caller break that, it must mismatch, not crash.
    return hmac.compare_digest(expected.encode("ascii"),
                               provided.encode("latin-1", "replace"))


def _hmac_hex(key, message):
    return hmac.new(key, message.encode("latin-1", "replace"), hashlib.sha256).hexdigest()


def derive_signing_key(secret, date, region, service):
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("latin-1"), hashlib.sha256).digest()
    return key


class SigningKeyCache:
    """Derived signing keys, one per (secret, day, region, service).

    Deriving a key takes four HMACs; a client signs all of a day's requests
    with the same one, so nearly every request is a hit. Entries are keyed by
    the secret itself, not the access key id, so that a rotated secret is
    never served a key derived from the old one. Only keys that have just
    verified a signature are kept, so someone who knows an access key id but
    not its secret cannot churn the cache with invented scopes.
    """

    # Oldest out first beyond this: far more (key, day, region) triples than
    # one node sees in a day, at a few hundred bytes an entry.
    max_entries = 1024

    def __init__(self):
        self._keys = {}

    def get(self, secret, date, region, service):
        key = self._keys.get((secret, date, region, service))
        if key is None:
            key = derive_signing_key(secret, date, region, service)
        return key

    def keep(self, secret, date, region, service, key):
        entry = (secret, date, region, service)
        if entry in self._keys:
            return
        if len(self._keys) >= self.max_entries:
            del self._keys[next(iter(self._keys))]
        self._keys[entry] = key

    def __len__(self):
        return len(self._keys)


signing_keys = SigningKeyCache()


@dataclass(frozen=True)
class ChunkSigner:
    """What checking an aws-chunked body needs from its request's
    Authorization header. Each chunk's signature signs the chunk's SHA-256
    and the previous signature, starting from the header's own ("seed")
    signature, so chunks can be neither altered, dropped nor reordered; the
    trailer's signature closes the chain."""

    signing_key: bytes = field(repr=False)
    timestamp: str
    scope: str
    seed_signature: str

    def chunk_signature(self, previous, chunk_sha256):
        return _hmac_hex(self.signing_key, "\n".join((
            "AWS4-HMAC-SHA256-PAYLOAD", self.timestamp, self.scope, previous,
            EMPTY_SHA256, chunk_sha256)))

    def trailer_signature(self, previous, canonical_trailers):
        """``canonical_trailers``: ``name:value\\n`` per trailing header, as bytes."""
        return _hmac_hex(self.signing_key, "\n".join((
            "AWS4-HMAC-SHA256-TRAILER", self.timestamp, self.scope, previous,
            hashlib.sha256(canonical_trailers).hexdigest())))


# -- verification -----------------------------------------------------------

def _parse_credential(value, code):
    parts = value.split("/")
    if len(parts) != 5 or not all(parts) or not _DATE8.fullmatch(parts[1]):
        raise S3Error(code, f"Error parsing the Credential {value!r}; expecting "
                            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key_id, date, region, service, terminator = parts
    if service != "s3":
        raise S3Error(code, f'Credential should be scoped to correct service: "s3", not "{service}".')
    if terminator != "aws4_request":
        raise S3Error(code, 'Credential should be scoped with a valid terminator: '
                            f'"aws4_request", not "{terminator}".')
    # Any region is accepted: a self-hosted node answers for whatever region
    # its clients were configured with.
    return access_key_id, date, region, service


def _payload_hash(value):
    if value in _PAYLOAD_LITERALS:
        return value
    if _HEX64.fullmatch(value):
        return value.lower()
    raise S3Error("InvalidArgument",
                  "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
                  "or a valid sha256 value.",
                  extra={"ArgumentName": "x-amz-content-sha256", "ArgumentValue": value})


def _signed_header_names(value, code):
    names = value.split(";")
    if not all(names):
        raise S3Error(code, f"Malformed SignedHeaders {value!r}.")
    return names


def _check_all_signed(headers, signed_names):
    # AWS requires Host and every x-amz-* header the request carries to be
    # signed; otherwise anyone on the path could add, say, an ACL.
    signed = set(signed_names)
    unsigned = sorted(name for name in headers
                      if (name == "host" or name.startswith("x-amz-")) and name not in signed)
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not signed",
                      extra={"HeadersNotSigned": ", ".join(unsigned)})


def _lookup(lookup_secret, access_key_id):
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key_id})
    return secret


def _verify(view, query, signed_names, payload, timestamp, credential, secret, signature):
    """Check ``signature`` over the canonical request; return the signing key.

    The path is tried first in AWS's canonical encoding, then, if the client
    sent something else, exactly as sent: some clients sign their own
    encoding (a ``%7E`` for ``~``, lowercase hex) rather than the canonical one.
    """
    access_key_id, date, region, service = credential
    headers = view.headers
    header_block = "".join([f"{name}:{_trimall(headers.get(name, ''))}\n" for name in signed_names])
    scope = f"{date}/{region}/{service}/aws4_request"
    key = signing_keys.get(secret, date, region, service)
    uris = [canonical_uri(view.raw_path)]
    raw = view.raw_path.decode("latin-1") or "/"
    if raw != uris[0]:
        uris.append(raw)
    first = None
    for uri in uris:
        canonical_request = "\n".join(
            (view.method, uri, query, header_block, ";".join(signed_names), payload))
        string_to_sign = "\n".join((
            ALGORITHM, timestamp, scope,
            hashlib.sha256(canonical_request.encode("latin-1", "replace")).hexdigest()))
        if same_signature(_hmac_hex(key, string_to_sign), signature):
            signing_keys.keep(secret, date, region, service, key)
            return key, scope
        first = first or (canonical_request, string_to_sign)
    raise S3Error("SignatureDoesNotMatch", extra={
        "AWSAccessKeyId": access_key_id,
        "SignatureProvided": signature,
        "StringToSign": first[1],
        "CanonicalRequest": first[0],
    })


def _parse_authorization(authorization):
    _, _, rest = authorization.partition(" ")
    fields = {}
    for item in rest.split(","):
        name, equals, value = item.strip().partition("=")
        if not equals or name in fields:
            raise S3Error("AuthorizationHeaderMalformed",
                          f"The authorization header is malformed; cannot parse {item.strip()!r}.")
        fields[name] = value.strip()
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        raise S3Error("AuthorizationHeaderMalformed",
                      "The authorization header is malformed; the authorization header requires "
                      "three components: Credential, SignedHeaders, and Signature.")
    return fields


def verify_header(view, authorization, params, lookup_secret, now):
    """Verify a request signed with an ``AWS4-HMAC-SHA256`` Authorization
    header. ``params`` is ``parse_query(view.raw_query)``.

    Returns ``(access_key_id, payload_hash, chunk_signer)``; the payload hash
    is the x-amz-content-sha256 value (a hex digest in lowercase), the chunk
    signer is set for the STREAMING-AWS4-HMAC-SHA256-* payloads.
    """
    fields = _parse_authorization(authorization)
    credential = _parse_credential(fields["Credential"], "AuthorizationHeaderMalformed")
    signed_names = _signed_header_names(fields["SignedHeaders"], "AuthorizationHeaderMalformed")
    signature = fields["Signature"]
    headers = view.headers

    content_sha256 = headers.get("x-amz-content-sha256")
    if content_sha256 is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    payload_hash = _payload_hash(content_sha256)

    if "x-amz-date" in headers:
        timestamp = headers["x-amz-date"]
        request_time = parse_amz_date(timestamp)
    else:
        request_time = parse_http_date(headers.get("date", ""))
        if request_time is not None:
            timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(request_time))
    if request_time is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if timestamp[:8] != credential[1]:
        raise S3Error("AuthorizationHeaderMalformed",
                      "Invalid credential date. Date is not the same as X-Amz-Date.")

    secret = _lookup(lookup_secret, credential[0])
    check_skew(request_time, now)
    _check_all_signed(headers, signed_names)
    key, scope = _verify(view, canonical_query(params), signed_names, content_sha256,
                         timestamp, credential, secret, signature)
    signer = None
    if payload_hash in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        signer = ChunkSigner(key, timestamp, scope, signature)
    return credential[0], payload_hash, signer


def verify_query(view, params, lookup_secret, now):
    """Verify a presigned URL (``X-Amz-Algorithm=AWS4-HMAC-SHA256&...``).

    Returns ``(access_key_id, payload_hash)``. The payload is unsigned
    unless the URL carries an ``X-Amz-Content-Sha256`` parameter, which some
    SDKs add and sign in place of UNSIGNED-PAYLOAD.
    """
    code = "AuthorizationQueryParametersError"
    auth = {}
    content_sha256 = UNSIGNED_PAYLOAD
    for name, value in params:
        if name in _QUERY_AUTH:
            if name in auth:
                raise S3Error(code, f"{name} appears more than once in the query string.")
            auth[name] = value or ""
        elif name.lower() == "x-amz-content-sha256":
            content_sha256 = value or ""
    if not auth.keys() >= set(_QUERY_REQUIRED):
        raise S3Error(code, "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                            "and X-Amz-Expires parameters.")
    if auth["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(code, f'X-Amz-Algorithm only supports "{ALGORITHM}".')
    credential = _parse_credential(auth["X-Amz-Credential"], code)
    signed_names = _signed_header_names(auth["X-Amz-SignedHeaders"], code)
    timestamp = auth["X-Amz-Date"]
    request_time = parse_amz_date(timestamp)
    if request_time is None:
        raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\".")
    expires = integers.non_negative(auth["X-Amz-Expires"], integers.INT64_MAX)
    if expires is None:
        raise S3Error(code, "X-Amz-Expires should be a non-negative number of seconds.")
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error(code, "X-Amz-Expires must be less than a week (in seconds) that is; "
                            f"the maximum expires is {MAX_PRESIGN_EXPIRES} seconds.")
    if timestamp[:8] != credential[1]:
        raise S3Error(code, "Invalid credential date. Date is not the same as X-Amz-Date.")
    payload_hash = _payload_hash(content_sha256)

    secret = _lookup(lookup_secret, credential[0])
    if request_time - now > MAX_SKEW_SECONDS:
        raise S3Error("AccessDenied", "Request is not yet valid", extra={
            "X-Amz-Date": timestamp, "ServerTime": iso8601(now)})
    if now > request_time + expires:
        raise S3Error("AccessDenied", "Request has expired", extra={
            "X-Amz-Expires": str(expires),
            "Expires": iso8601(request_time + expires),
            "ServerTime": iso8601(now)})
    _check_all_signed(view.headers, signed_names)
    _verify(view, canonical_query(params, exclude="X-Amz-Signature"), signed_names,
            content_sha256, timestamp, credential, secret, auth["X-Amz-Signature"])
    return credential[0], payload_hash
