"""AWS Signature Version 2 as S3 uses it: ``Authorization: AWS AKID:sig``
and presigned URLs (``AWSAccessKeyId``, ``Signature``, ``Expires``).

It stays because clients still send it: boto3's ``generate_presigned_url``
and aws CLI v1's ``aws s3 presign`` produce SigV2 URLs by default against a
custom endpoint, and older tools sign every request this way.

This module owns SigV2's string to sign and its canonical resource. Like
``sigv4`` (whose encoding rules and time helpers it shares) it is sans-IO
and treats strings as ISO-8859-1 views of the wire bytes.

The string to sign is::

    VERB \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
    x-amz-name:value \\n ... CanonicalizedResource

SigV2 was specified loosely and clients differ on three points, so a
signature is checked against each reading real clients use, likeliest
first: one HMAC-SHA1 for botocore's requests, at most two dozen (of a few
hundred bytes each) for a request that matches none:

- the path: exactly as sent (what botocore signs) or re-encoded
  canonically; for a path-style bucket request ``/bucket`` also
  ``/bucket/``, which AWS documents and botocore signs;
- the Date line when x-amz-date is present: empty (AWS's rule), the Date
  header (botocore), or x-amz-date's value in place of its own header line
  (AWS's worked DELETE example);
- the sub-resources: botocore's list predates ``retention``, ``legal-hold``
  and ``encryption`` and leaves them out of what it signs.
"""

import base64
import hashlib
import hmac

from z4node.s3 import integers
from z4node.s3.errors import S3Error
from z4node.s3.sigv4 import canonical_uri, check_skew, iso8601, parse_http_date, same_signature

# The query parameters that are part of the canonical resource: those AWS's
# SigV2 documentation lists and those botocore's HmacV1Auth signs.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "encryption",
    "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification",
    "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore",
    "retention", "select", "select-type", "storageClass", "tagging", "torrent", "uploadId",
    "uploads", "versionId", "versioning", "versions", "website",
})
_NOT_SIGNED_BY_BOTOCORE = frozenset({"encryption", "legal-hold", "retention"})


def _resources(view, params):
    """The canonical resources a client may have signed, likeliest first."""
    raw = view.raw_path.decode("latin-1") or "/"
    paths = [raw, canonical_uri(view.raw_path)]
    if view.virtual_host_bucket:
        paths = [f"/{view.virtual_host_bucket}{path}" for path in paths]
    elif raw != "/" and raw.count("/") == 1:
        # A path-style request for a bucket, "/bucket": the resource AWS
        # documents, and botocore signs, is "/bucket/".
        paths = [path + "/" for path in paths] + paths
    paths = list(dict.fromkeys(paths))
    names = {name for name, _ in params}
    subresource_sets = [SUBRESOURCES]
    if not names.isdisjoint(_NOT_SIGNED_BY_BOTOCORE):
        subresource_sets.append(SUBRESOURCES - _NOT_SIGNED_BY_BOTOCORE)
    for subresources in subresource_sets:
        # Sorted by name only; values are signed decoded, and a parameter
        # written without "=" is signed without one.
        signed = sorted((p for p in params if p[0] in subresources), key=lambda p: p[0])
        query = "&".join([name if value is None else f"{name}={value}" for name, value in signed])
        for path in paths:
            yield f"{path}?{query}" if query else path


def _amz_block(amz):
    return "".join([f"{name}:{amz[name]}\n" for name in sorted(amz)])


def _verify(view, params, secret, signature, date_variants, content_md5, content_type):
    """``date_variants``: (Date line, x-amz-* headers) pairs to try."""
    key = secret.encode("utf-8")
    head = f"{view.method}\n{content_md5}\n{content_type}\n"
    first = None
    for resource in _resources(view, params):
        for date_line, amz in date_variants:
            string_to_sign = f"{head}{date_line}\n{_amz_block(amz)}{resource}"
            digest = hmac.new(key, string_to_sign.encode("latin-1", "replace"), hashlib.sha1).digest()
            if same_signature(base64.b64encode(digest).decode("ascii"), signature):
                return
            first = first or string_to_sign
    raise S3Error("SignatureDoesNotMatch", extra={
        "SignatureProvided": signature, "StringToSign": first})


def _amz_headers(headers):
    return {name: value.strip() for name, value in headers.items() if name.startswith("x-amz-")}


def _lookup(lookup_secret, access_key_id):
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": access_key_id})
    return secret


def verify_header(view, authorization, params, lookup_secret, now):
    """Verify ``Authorization: AWS AKID:signature``; return the access key id.
    ``params`` is ``sigv4.parse_query(view.raw_query)``."""
    access_key_id, colon, signature = authorization[len("AWS "):].partition(":")
    access_key_id, signature = access_key_id.strip(), signature.strip()
    if not colon or not access_key_id or not signature:
        raise S3Error("InvalidArgument",
                      "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
                      extra={"ArgumentName": "Authorization", "ArgumentValue": authorization})
    headers = view.headers
    amz = _amz_headers(headers)
    date = headers.get("date", "").strip()
    request_time = parse_http_date(amz.get("x-amz-date", date))
    if request_time is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    secret = _lookup(lookup_secret, access_key_id)
    check_skew(request_time, now)
    if "x-amz-date" in amz:
        without = {name: value for name, value in amz.items() if name != "x-amz-date"}
        date_variants = [("", amz), (date, amz), (amz["x-amz-date"], without)]
    else:
        date_variants = [(date, amz)]
    _verify(view, params, secret, signature, date_variants,
            headers.get("content-md5", "").strip(), headers.get("content-type", "").strip())
    return access_key_id


def verify_query(view, params, lookup_secret, now):
    """Verify a presigned URL (``AWSAccessKeyId=...&Signature=...&Expires=...``);
    return the access key id.

    Headers that would be signed (x-amz-*, Content-MD5, Content-Type) may
    travel as query parameters instead, as botocore puts them; a header
    actually sent wins over its query twin.
    """
    auth = {}
    in_query = {}
    for name, value in params:
        if name in ("AWSAccessKeyId", "Signature", "Expires"):
            auth[name] = value or ""
        else:
            lowered = name.lower()
            if lowered.startswith("x-amz-") or lowered in ("content-md5", "content-type"):
                in_query.setdefault(lowered, (value or "").strip())
    if len(auth) != 3 or not all(auth.values()):
        raise S3Error("AccessDenied", "Query-string authentication requires the Signature, "
                                      "Expires and AWSAccessKeyId parameters")
    expires = auth["Expires"]
    seconds = integers.non_negative(expires, integers.INT64_MAX)
    if seconds is None:
        raise S3Error("AccessDenied", f"Invalid date (should be seconds since epoch): {expires}")
    secret = _lookup(lookup_secret, auth["AWSAccessKeyId"])
    if now > seconds:
        raise S3Error("AccessDenied", "Request has expired", extra={
            "Expires": iso8601(seconds), "ServerTime": iso8601(now)})
    headers = view.headers
    amz = {name: value for name, value in in_query.items() if name.startswith("x-amz-")}
    amz.update(_amz_headers(headers))
    _verify(view, params, secret, auth["Signature"], [(expires, amz)],
            headers.get("content-md5", in_query.get("content-md5", "")).strip(),
            headers.get("content-type", in_query.get("content-type", "")).strip())
    return auth["AWSAccessKeyId"]
