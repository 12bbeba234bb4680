"""ListObjects (v1) and ListObjectsV2: one page of keys and common prefixes,
each page costing O(page) (see MetaStore.list_heads)."""

import base64
import binascii
from urllib.parse import quote

from z4node.s3 import acl as acls
from z4node.s3 import conditions, integers, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error

MAX_KEYS = 1000


def max_keys(call):
    return min(integers.parameter(call.query.get("max-keys", str(MAX_KEYS)), "max-keys"),
               MAX_KEYS)


def _encoder(call):
    encoding = call.query.get("encoding-type")
    if encoding is None:
        return None, lambda s: s
    if encoding.lower() != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      extra={"ArgumentName": "encoding-type", "ArgumentValue": encoding})
    return "url", lambda s: quote(s, safe="/")


def _contents(api, bucket, items, encode, with_owner):
    names = api.system.user_names() if with_owner else None
    target = api.objects.bucket(bucket)
    out = []
    for item in items:
        if not isinstance(item, str):
            children = [("Key", encode(item.key)),
                        ("LastModified", xml.iso8601(item.last_modified)),
                        ("ETag", conditions.quoted(item.etag)),
                        ("Size", item.size)]
            if with_owner:
                owner = acls.reported_owner(target, item.owner)
                children.append(("Owner", [("ID", owner),
                                           ("DisplayName", names.get(owner, ""))]))
            children.append(("StorageClass", "STANDARD"))
            out.append(("Contents", children))
    for item in items:
        if isinstance(item, str):
            out.append(("CommonPrefixes", [("Prefix", encode(item))]))
    return out


async def _page(api, bucket, prefix, delimiter, after, limit):
    """One page of a listing. max-keys=0 asks for nothing, and S3 then
    answers an empty page that is not truncated (a client paging on
    IsTruncated would otherwise ask again forever)."""
    if limit == 0:
        api.objects.bucket(bucket)
        return [], False
    return await api.objects.list_objects(bucket, prefix, delimiter, after, limit)


def _last_name(items):
    last = items[-1]
    return last if isinstance(last, str) else last.key


async def list_objects_v1(api, call):
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    marker = call.query.get("marker", "")
    limit = max_keys(call)
    encoding, encode = _encoder(call)
    items, truncated = await _page(api, call.bucket, prefix, delimiter, marker or None, limit)
    children = [("Name", call.bucket), ("Prefix", encode(prefix)),
                ("Marker", encode(marker)), ("MaxKeys", limit)]
    if delimiter:
        children.append(("Delimiter", encode(delimiter)))
    children.append(("IsTruncated", truncated))
    if truncated and delimiter and items:
        children.append(("NextMarker", encode(_last_name(items))))
    if encoding:
        children.append(("EncodingType", encoding))
    children.extend(_contents(api, call.bucket, items, encode, with_owner=True))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListBucketResult", children))


def make_token(name):
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii")


def untoken(token):
    try:
        # validate: without it, characters outside the alphabet are
        # skipped and "%%" would decode to "", the start of the listing.
        return base64.b64decode(token.encode("ascii"), altchars=b"-_",
                                validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      extra={"ArgumentName": "continuation-token"}) from None


async def list_objects_v2(api, call):
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    token = call.query.get("continuation-token")
    start_after = call.query.get("start-after", "")
    limit = max_keys(call)
    encoding, encode = _encoder(call)
    fetch_owner = call.query.get("fetch-owner", "false").lower() == "true"
    after = untoken(token) if token is not None else (start_after or None)
    items, truncated = await _page(api, call.bucket, prefix, delimiter, after, limit)
    children = [("Name", call.bucket), ("Prefix", encode(prefix)),
                ("KeyCount", len(items)), ("MaxKeys", limit)]
    if delimiter:
        children.append(("Delimiter", encode(delimiter)))
    children.append(("IsTruncated", truncated))
    if token is not None:
        children.append(("ContinuationToken", token))
    if truncated and items:
        children.append(("NextContinuationToken", make_token(_last_name(items))))
    if start_after:
        children.append(("StartAfter", encode(start_after)))
    if encoding:
        children.append(("EncodingType", encoding))
    children.extend(_contents(api, call.bucket, items, encode, with_owner=fetch_owner))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListBucketResult", children))
