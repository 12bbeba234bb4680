"""Tagging: Put/Get/DeleteObjectTagging (any version), Put/Get/Delete
BucketTagging, and the ``x-amz-tagging`` header of uploads and copies.

Tags are validated as S3 validates them: at most 10 per object (50 per
bucket), keys of 1-128 and values of 0-256 Unicode characters drawn from
letters, digits, spaces and ``+ - = . _ : / @``, no key twice, no key
starting with ``aws:``.
"""

import unicodedata
from urllib.parse import parse_qsl

from z4node.s3 import xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import read_document
from z4node.s3.handlers.versioning import requested_version, version_headers

MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
_PUNCTUATION = frozenset(" +-=._:/@")


def _allowed(text):
    return all(ch in _PUNCTUATION or unicodedata.category(ch)[0] in "LNZ" for ch in text)


def validate(pairs, limit, what="Object"):
    """``[(key, value)]`` -> dict, or S3's error for the first problem."""
    if len(pairs) > limit:
        if what == "Object":
            raise S3Error("BadRequest", "Object tags cannot be greater than 10")
        raise S3Error("InvalidTag", f"Bucket tag count cannot be greater than {limit}")
    tags = {}
    for key, value in pairs:
        if not key or not _allowed(key):
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(key) > MAX_KEY_LENGTH:
            raise S3Error("InvalidTag", "The TagKey you have provided is too long, max 128")
        if key.startswith("aws:"):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if not _allowed(value):
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
        if len(value) > MAX_VALUE_LENGTH:
            raise S3Error("InvalidTag", "The TagValue you have provided is too long, max 256")
        if key in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[key] = value
    return tags


def tags_from_header(headers):
    """The tags of ``x-amz-tagging`` (URL-query encoded), or None if absent."""
    value = headers.get("x-amz-tagging")
    if value is None:
        return None
    try:
        pairs = parse_qsl(value.encode("latin-1").decode("utf-8"),
                          keep_blank_values=True)
    except (ValueError, UnicodeError):
        raise S3Error("InvalidArgument", "The header 'x-amz-tagging' shall be encoded as "
                      "UTF-8 then URLEncoded URL query parameters without tag name "
                      "duplicates.", extra={"ArgumentName": "x-amz-tagging",
                                            "ArgumentValue": value}) from None
    if len({k for k, _ in pairs}) != len(pairs):
        raise S3Error("InvalidArgument", "The header 'x-amz-tagging' shall be encoded as "
                      "UTF-8 then URLEncoded URL query parameters without tag name "
                      "duplicates.", extra={"ArgumentName": "x-amz-tagging",
                                            "ArgumentValue": value})
    return validate(pairs, MAX_OBJECT_TAGS)


def tagging_count_header(version):
    tags = version.meta.get("tags")
    return {"x-amz-tagging-count": str(len(tags))} if tags else {}


def _tag_set(document):
    tag_set = document.find("TagSet")
    if tag_set is None:
        raise S3Error("MalformedXML")
    pairs = []
    for tag in tag_set.findall("Tag"):
        key, value = xml.text(tag, "Key"), xml.text(tag, "Value")
        if key is None or value is None:
            raise S3Error("MalformedXML")
        pairs.append((key, value))
    return pairs


def _tagging_document(tags):
    return xml.document("Tagging", [("TagSet", [
        ("Tag", [("Key", k), ("Value", v)]) for k, v in tags.items()])])


async def put_object_tagging(api, call):
    version_id = requested_version(call)
    document = await read_document(api, call, "Tagging")
    tags = validate(_tag_set(document), MAX_OBJECT_TAGS)
    version = await api.objects.set_tags(call.bucket, call.key, version_id, tags)
    return Response(headers=version_headers(api, call.bucket, version))


async def get_object_tagging(api, call):
    version_id = requested_version(call)
    version = await api.objects.head_object(call.bucket, call.key, version_id)
    headers = {"content-type": "application/xml"}
    headers.update(version_headers(api, call.bucket, version))
    return Response(headers=headers,
                    body=_tagging_document(version.meta.get("tags", {})))


async def delete_object_tagging(api, call):
    version_id = requested_version(call)
    version = await api.objects.set_tags(call.bucket, call.key, version_id, {})
    return Response(204, version_headers(api, call.bucket, version))


async def put_bucket_tagging(api, call):
    document = await read_document(api, call, "Tagging", require_digest=True)
    tags = validate(_tag_set(document), MAX_BUCKET_TAGS, what="Bucket")
    await api.objects.set_bucket_setting(call.bucket, "tags", tags or None)
    return Response(204)


async def get_bucket_tagging(api, call):
    tags = api.objects.bucket(call.bucket).settings.get("tags")
    if not tags:
        raise S3Error("NoSuchTagSet", extra={"BucketName": call.bucket})
    return Response(headers={"content-type": "application/xml"},
                    body=_tagging_document(tags))


async def delete_bucket_tagging(api, call):
    await api.objects.set_bucket_setting(call.bucket, "tags", None)
    return Response(204)
