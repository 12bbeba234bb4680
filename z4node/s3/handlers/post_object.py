"""PostObject: a browser's HTML form upload (``multipart/form-data``),
signed by a policy document (SigV4 or SigV2 POST signatures, as boto3's
``generate_presigned_post`` and AWS's browser-upload examples make them).

The form is parsed as it streams in: the fields before the file are read
(at most ``MAX_FIELDS_BYTES`` of them), then the signature, the policy's
expiration and every one of its conditions are checked, and only then is
the file part streamed into the object layer, chunk by chunk, never held
whole (encrypted as the form's ``x-amz-server-side-encryption*`` fields
ask, as PutObject's headers would); ``content-length-range`` is enforced
while it streams. Fields after the file are ignored, as S3 ignores them.
"""

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timezone
from urllib.parse import quote, urlencode, urlsplit

from multipart import (MultipartError, MultipartSegment, PushMultipartParser,
                       parse_options_header)

from z4node.s3 import authorization, conditions, sigv4, sse, xml
from z4node.s3.api import Response, header_value
from z4node.s3.errors import S3Error
from z4node.s3.handlers.object_lock import lock_meta_from_headers
from z4node.s3.handlers.objects import STORED_HEADERS, acl_meta, new_owner, user_metadata
from z4node.s3.handlers.tagging import MAX_OBJECT_TAGS, validate
from z4node.s3.handlers.versioning import version_headers

# S3 refuses a form whose fields before the file exceed 20 KB
# (MaxPostPreDataLengthExceededError).
MAX_FIELDS_BYTES = 20 * 1024
# Fields S3 never asks a policy condition for.
_UNCONDITIONED = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid",
                            "file"})


class _Form:
    """A multipart/form-data body as parser events, pulled as needed."""

    def __init__(self, body, boundary):
        self._body = body.__aiter__()
        self._parser = PushMultipartParser(boundary, max_header_size=8192,
                                           max_header_count=16)
        self._events = []
        self._at = 0

    async def next(self):
        """The next event: a MultipartSegment, bytes, None (segment end), or
        EOFError at the end of the form."""
        while self._at == len(self._events):
            if self._parser.closed:
                raise EOFError
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                chunk = b""
            try:
                self._events = list(self._parser.parse(chunk))
            except MultipartError:
                # ParserError, and ParserLimitReached: a part with more or
                # longer headers than the limits above.
                raise S3Error("MalformedPOSTRequest") from None
            self._at = 0
            if not chunk and not self._events:
                raise EOFError
        event = self._events[self._at]
        self._at += 1
        return event


async def _read_fields(form):
    """Fields up to the file part: (lower-cased name -> str, file segment)."""
    fields = {}
    size = 0
    while True:
        try:
            event = await form.next()
        except EOFError:
            return fields, None
        if not isinstance(event, MultipartSegment):
            raise S3Error("MalformedPOSTRequest")
        name = event.name.lower()
        if name == "file":
            return fields, event
        value = bytearray()
        while True:
            try:
                piece = await form.next()
            except EOFError:
                raise S3Error("MalformedPOSTRequest") from None
            if piece is None:
                break
            value += piece
            size += len(piece)
            if size > MAX_FIELDS_BYTES:
                raise S3Error("MaxPostPreDataLengthExceededError")
        try:
            fields[name] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("MalformedPOSTRequest") from None


def _policy(fields):
    try:
        document = json.loads(base64.b64decode(fields["policy"], validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(document, dict):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    if "expiration" not in document:
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Policy missing expiration.")
    if not isinstance(document.get("conditions"), list):
        raise S3Error("InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    return document


def _authenticate(api, fields):
    """The access key that signed the form's policy (None: unsigned)."""
    if "policy" not in fields:
        return None
    policy = fields["policy"].encode("latin-1", "replace")
    if "x-amz-signature" in fields:
        if fields.get("x-amz-algorithm") != sigv4.ALGORITHM:
            raise S3Error("InvalidArgument", "Only AWS4-HMAC-SHA256 is supported",
                          extra={"ArgumentName": "x-amz-algorithm",
                                 "ArgumentValue": fields.get("x-amz-algorithm", "")})
        parts = fields.get("x-amz-credential", "").split("/")
        if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
            raise S3Error("InvalidArgument", "Invalid credential",
                          extra={"ArgumentName": "x-amz-credential",
                                 "ArgumentValue": fields.get("x-amz-credential", "")})
        access_key_id, date, region = parts[0], parts[1], parts[2]
        secret = api.system.secret_for(access_key_id)
        if secret is None:
            raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key_id})
        key = sigv4.derive_signing_key(secret, date, region, "s3")
        expected = hmac.new(key, policy, hashlib.sha256).hexdigest()
        if not sigv4.same_signature(expected, fields["x-amz-signature"]):
            raise S3Error("SignatureDoesNotMatch")
    elif "signature" in fields:
        access_key_id = fields.get("awsaccesskeyid", "")
        secret = api.system.secret_for(access_key_id)
        if secret is None:
            raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key_id})
        expected = base64.b64encode(
            hmac.new(secret.encode("utf-8"), policy, hashlib.sha1).digest()).decode("ascii")
        if not sigv4.same_signature(expected, fields["signature"]):
            raise S3Error("SignatureDoesNotMatch")
    else:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named "
                      "'x-amz-signature' or 'signature' with the policy's signature.")
    return api.system.key_by_id(access_key_id)


def _failed(condition):
    return S3Error("AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                   + json.dumps(condition))


def check_policy(document, fields, bucket, now):
    """Raise unless the form meets the policy; returns (min, max) size."""
    expiration = document["expiration"]
    try:
        expires = datetime.fromisoformat(str(expiration).strip())
    except ValueError:
        raise S3Error("InvalidPolicyDocument",
                      "Invalid Policy: Invalid 'expiration' value: " + json.dumps(expiration)
                      ) from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    if expires.timestamp() <= now:
        raise S3Error("AccessDenied", "Invalid according to Policy: Policy expired.")
    values = dict(fields, bucket=bucket)
    covered = set()
    size_range = (0, None)
    for condition in document["conditions"]:
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise S3Error("InvalidPolicyDocument",
                              "Invalid Policy: Invalid Simple-Condition: "
                              "Simple-Conditions must have exactly one property specified.")
            (name, expected), = condition.items()
            operation, name = "eq", name.lower()
        elif isinstance(condition, list) and condition and condition[0] == "content-length-range":
            try:
                low, high = int(condition[1]), int(condition[2])
            except (IndexError, TypeError, ValueError):
                raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid "
                              "content-length-range condition.") from None
            size_range = (low, high)
            continue
        elif isinstance(condition, list) and len(condition) == 3 \
                and condition[0] in ("eq", "starts-with") and isinstance(condition[1], str) \
                and condition[1].startswith("$"):
            operation, name, expected = condition[0], condition[1][1:].lower(), condition[2]
        else:
            raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid Condition: "
                          + json.dumps(condition))
        if not isinstance(expected, str):
            raise S3Error("InvalidPolicyDocument", "Invalid Policy: Invalid Condition: "
                          + json.dumps(condition))
        covered.add(name)
        actual = values.get(name, "")
        if operation == "eq" and actual != expected:
            raise _failed(["eq", "$" + name, expected])
        if operation == "starts-with" and not actual.startswith(expected):
            raise _failed(["starts-with", "$" + name, expected])
    extra = [name for name in fields if name not in covered and name not in _UNCONDITIONED
             and not name.startswith("x-ignore-")]
    if extra:
        raise S3Error("AccessDenied", "Invalid according to Policy: Extra input fields: "
                      + ", ".join(extra))
    return size_range


def _metadata(fields):
    """The stored metadata the form's fields ask for (as PutObject's headers)."""
    stored = {name: fields[name] for name in STORED_HEADERS if name in fields}
    # Form fields are text; metadata is stored as wire strings, as PUT's.
    user = user_metadata({name: header_value(value) for name, value in fields.items()})
    meta = {"content-type": fields.get("content-type") or "binary/octet-stream",
            "headers": stored, "user": user}
    if "tagging" in fields:
        document = xml.parse(fields["tagging"].encode("utf-8"), "Tagging")
        tag_set = document.find("TagSet")
        pairs = [(xml.text(t, "Key") or "", xml.text(t, "Value") or "")
                 for t in (tag_set.findall("Tag") if tag_set is not None else [])]
        tags = validate(pairs, MAX_OBJECT_TAGS)
        if tags:
            meta["tags"] = tags
    return meta


async def _file_bytes(form, size_range, max_bytes):
    low, high = size_range
    limit = max_bytes if high is None else min(high, max_bytes)
    received = 0
    while True:
        try:
            piece = await form.next()
        except EOFError:
            raise S3Error("MalformedPOSTRequest") from None
        if piece is None:
            break
        received += len(piece)
        if received > limit:
            raise S3Error("EntityTooLarge", extra={"MaxSizeAllowed": str(limit)})
        yield piece
    if received < low:
        raise S3Error("EntityTooSmall", extra={"ProposedSize": str(received),
                                               "MinSizeAllowed": str(low)})


# What may follow the file (ignored fields, the closing boundary) is read so
# the connection can be reused; past this much it is left unread and the
# connection closes after the answer.
MAX_TRAILING_BYTES = 64 * 1024


async def _drain(form):
    """Read (and ignore) what follows the file, up to MAX_TRAILING_BYTES."""
    seen = 0
    try:
        while seen <= MAX_TRAILING_BYTES:
            event = await form.next()
            if isinstance(event, bytes):
                seen += len(event)
    except (EOFError, S3Error):
        pass


def _redirect(url, bucket, key, etag):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    query = urlencode({"bucket": bucket, "key": key, "etag": etag})
    return url + ("&" if parts.query else "?") + query


async def post_object(api, call):
    content_type, options = parse_options_header(call.headers.get("content-type", ""))
    if content_type != "multipart/form-data" or not options.get("boundary"):
        message = "Bucket POST must be of the enclosure-type multipart/form-data"
        raise S3Error("PreconditionFailed", message, extra={"Condition": message})
    form = _Form(call.request.body, options["boundary"])
    fields, file_segment = await _read_fields(form)
    call.access_key = _authenticate(api, fields)
    if "key" not in fields:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.  "
                      "If it is specified, please check the order of the fields.",
                      extra={"ArgumentName": "key", "ArgumentValue": ""})
    key = fields["key"]
    if file_segment is not None:
        key = key.replace("${filename}", file_segment.filename or "")
    if not key or len(key.encode("utf-8")) > 1024:
        raise S3Error("KeyTooLongError" if key else "InvalidArgument")
    # The form's key and canned ACL are what the request writes: the one
    # authorization decision sees them as it sees a PUT's path and x-amz-acl.
    call.key = key
    if "acl" in fields:
        call.headers["x-amz-acl"] = fields["acl"]
    for name, value in fields.items():
        if name.startswith("x-amz-server-side-encryption"):
            call.headers[name] = value
    await authorization.authorize(api, call)
    size_range = (0, None)
    if "policy" in fields:
        size_range = check_policy(_policy(fields), fields, call.bucket, api.clock.seconds())
    if file_segment is None:
        raise S3Error("IncorrectNumberOfFilesInPostRequest")
    if "x-amz-website-redirect-location" in fields:
        raise S3Error("NotImplemented", "The x-amz-website-redirect-location field is not "
                      "implemented for POST uploads.")
    customer_key = sse.write_encryption(api, call)
    kms = await sse.kms_request(api, call)
    meta = acl_meta(api, call, _metadata(fields))
    meta.update(lock_meta_from_headers(api, fields))
    version = await api.objects.put_object(
        call.bucket, key, _file_bytes(form, size_range, api.max_upload_bytes),
        owner=new_owner(call, meta), meta=meta, customer_key=customer_key, kms=kms)
    await _drain(form)
    etag = conditions.quoted(version.etag)
    location = f"http://{call.headers.get('host', '')}/{call.bucket}/{quote(key)}"
    headers = {"etag": etag, "location": location}
    headers.update(sse.response_headers(api, version.meta))
    headers.update(version_headers(api, call.bucket, version))
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        target = _redirect(redirect, call.bucket, key, etag)
        if target is not None:
            headers["location"] = target
            return Response(303, headers)
    status = fields.get("success_action_status")
    if status == "200":
        return Response(200, headers)
    if status == "201":
        headers["content-type"] = "application/xml"
        return Response(201, headers, xml.document("PostResponse", [
            ("Location", location), ("Bucket", call.bucket), ("Key", key),
            ("ETag", etag)], namespace=None))
    return Response(204, headers)
