"""Object operations: GetObject/HeadObject, PutObject, CopyObject,
DeleteObject and DeleteObjects, each on any version of a key.

User metadata (``x-amz-meta-*``) is handled as S3 documents it: values
sent as RFC 2047 encoded-words (``=?UTF-8?B?...?=``, what SDKs that refuse
raw non-ASCII headers send) are decoded before they are stored, and a
value that is not printable ASCII goes back out as one encoded-word,
``=?UTF-8?B?`` + base64 of its UTF-8 bytes + ``?=``, never as raw bytes.
(S3 itself reads raw non-ASCII header bytes as ISO-8859-1 and so returns
them UTF-8-encoded twice; we return the bytes that were sent.)
"""

import base64
import re
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from urllib.parse import parse_qsl, unquote

from z4node.objects import checksums, encryption
from z4node.objects.errors import ObjectError
from z4node.s3 import acl as acls
from z4node.s3 import authorization, conditions, integers, sse, xml
from z4node.s3.api import Response, header_value, http_date, object_error, wire_bytes
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import read_document
from z4node.s3.handlers.lifecycle import expiration_headers
from z4node.s3.handlers.object_lock import (bypass_governance, lock_headers,
                                            lock_meta_from_headers,
                                            require_digest_for_lock)
from z4node.s3.handlers.tagging import tagging_count_header, tags_from_header
from z4node.s3.handlers.versioning import requested_version, version_headers
from z4node.s3.router import MAX_KEY_BYTES

# Headers S3 stores with an object and returns on GET/HEAD.
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires")
# S3's limit on user metadata: 2 KB.
MAX_USER_METADATA = 2048
# GetObject's response-* parameters and the header each overrides.
OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
MAX_DELETE_KEYS = 1000
# A header value that goes out as it is stored.
_PRINTABLE_ASCII = re.compile("[\t\x20-\x7e]*")


def stored_metadata_value(value):
    """A user metadata value (a wire string) as stored: RFC 2047
    encoded-words decoded, still a wire string (its UTF-8 bytes)."""
    if "=?" not in value:
        return value
    try:
        text = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        # Not encoded-words after all (or an unknown charset): kept as sent.
        return value
    return header_value(text)


def metadata_header_value(value):
    """A stored user metadata value as its response header: as it is when
    printable ASCII, else one RFC 2047 encoded-word of its UTF-8 bytes."""
    if _PRINTABLE_ASCII.fullmatch(value):
        return value
    return "=?UTF-8?B?" + base64.b64encode(wire_bytes(value)).decode("ascii") + "?="


def user_metadata(fields):
    """The ``x-amz-meta-*`` entries of request headers or form fields (wire
    strings), as stored; MetadataTooLarge past S3's limit."""
    user = {name[len("x-amz-meta-"):]: stored_metadata_value(value)
            for name, value in fields.items() if name.startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge")
    return user


def metadata_from_headers(headers):
    """The stored metadata an upload's headers ask for."""
    stored = {}
    for name in STORED_HEADERS:
        value = headers.get(name)
        if value is not None:
            stored[name] = value
    encoding = stored.get("content-encoding")
    if encoding is not None:
        # aws-chunked describes the upload's framing, not the object.
        kept = [e.strip() for e in encoding.split(",") if e.strip().lower() != "aws-chunked"]
        if kept:
            stored["content-encoding"] = ",".join(kept)
        else:
            del stored["content-encoding"]
    return {"content-type": headers.get("content-type") or "binary/octet-stream",
            "headers": stored, "user": user_metadata(headers)}


def acl_meta(api, call, meta):
    """Add the ACL the request's x-amz-acl / x-amz-grant-* headers ask for
    to the metadata of a new object (refused where ACLs are disabled)."""
    meta.pop("acl", None)
    stored = acls.new_object_acl(
        api.objects.bucket(call.bucket), authorization.owner_id(call), call.headers,
        lambda user_id: api.system.key_by_user_id(user_id) is not None)
    if stored is not None:
        meta["acl"] = stored
    return meta


def new_owner(call, meta):
    """The owner of an object written with ``meta`` (see acl_meta)."""
    return acls.new_object_owner(meta.get("acl"), authorization.owner_id(call))


def object_headers(version):
    meta = version.meta
    headers = {
        "etag": conditions.quoted(version.etag),
        "last-modified": http_date(version.last_modified),
        "content-type": meta.get("content-type", "binary/octet-stream"),
        "accept-ranges": "bytes",
    }
    headers.update(meta.get("headers", {}))
    for name, value in meta.get("user", {}).items():
        headers["x-amz-meta-" + name] = metadata_header_value(value)
    return headers


def version_response_headers(api, bucket, version, current):
    """What S3 says about a version beside its content headers: its id,
    tag count, Object Lock state and (for the current version) when a
    lifecycle rule will expire it."""
    headers = version_headers(api, bucket, version)
    headers.update(tagging_count_header(version))
    headers.update(lock_headers(version))
    if current:
        headers.update(expiration_headers(api, bucket, version))
    return headers


async def find_version(api, bucket, key, version_id):
    """head_object, with NoSuchKey and NoSuchVersion naming what was asked."""
    try:
        return await api.objects.head_object(bucket, key, version_id)
    except ObjectError as e:
        if e.code not in ("NoSuchKey", "NoSuchVersion"):
            raise
        error = object_error(e)
        error.extra["Key"] = key
        if version_id is not None:
            error.extra["VersionId"] = version_id
        raise error from None


async def get_object(api, call):
    version_id = requested_version(call)
    customer_key = sse.customer_key_only(call)
    version = await find_version(api, call.bucket, call.key, version_id)
    sealing = api.objects.sealing_for(version, customer_key)
    headers = object_headers(version)
    headers.update(sse.response_headers(api, version.meta))
    headers.update(version_response_headers(api, call.bucket, version, version_id is None))
    status = conditions.evaluate(call.headers, version)
    if status == 412:
        raise S3Error("PreconditionFailed", extra={"Condition": "If-Match"})
    if status == 304:
        return Response(304, {k: headers[k] for k in ("etag", "last-modified")})
    for parameter, header in OVERRIDES.items():
        if parameter in call.query:
            headers[header] = header_value(call.query[parameter])
    part_sizes = version.meta.get("parts")
    if part_sizes:
        headers["x-amz-mp-parts-count"] = str(len(part_sizes))
    part_number = call.query.get("partNumber")
    if part_number is not None:
        if "range" in call.headers:
            raise S3Error("InvalidRequest",
                          "Cannot specify both Range header and partNumber query parameter")
        part_number = integers.parameter(part_number, "partNumber", minimum=1,
                                         message="partNumber must be a positive integer")
        byte_range = part_range(version, part_number)
        if version.size == 0:
            # An empty object's only part: no byte range can name it
            # ("bytes 0--1/0" is no header), so it goes out whole, as a 200.
            byte_range = None
    else:
        byte_range = conditions.parse_range(call.headers.get("range"), version.size)
    status = 200
    start, end = 0, version.size - 1
    if byte_range is not None:
        start, end = byte_range
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{version.size}"
    headers["content-length"] = str(end - start + 1)
    if call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        headers.update(checksum_headers(version, byte_range, part_number))
    if call.method == "HEAD":
        return Response(status, headers)
    if version.inline is not None and sealing is None:
        # Up to 4 KiB already in memory: no need for the streaming writer.
        return Response(status, headers, body=version.inline[start:end + 1])
    # The first chunk is read and verified before the status line goes
    # out: data found damaged there is a 500 InternalError, not a cut
    # connection.
    stream = await api.objects.open_read(version, start, end, sealing)
    return Response(status, headers, stream=stream)


def part_range(version, number):
    """Bytes (start, end) of part ``number``; an object not made by a
    multipart upload is its own part 1."""
    sizes = version.meta.get("parts") or [version.size]
    if number > len(sizes):
        # 400, as S3 answers (not 416: no byte range was asked for).
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable",
                      extra={"PartNumberRequested": str(number),
                             "ActualPartCount": str(len(sizes))})
    start = sum(sizes[:number - 1])
    return start, start + sizes[number - 1] - 1


def checksum_headers(version, byte_range, part_number):
    """The x-amz-checksum-* headers a GET/HEAD in checksum mode returns:
    the object's checksum for the whole object, a part's for partNumber,
    none for an arbitrary range (S3 has none to give)."""
    stored = version.meta.get("checksums", {})
    if not stored:
        return {}
    if part_number is not None and version.meta.get("part_checksums"):
        ((algorithm, _),) = stored.items()
        value = version.meta["part_checksums"][part_number - 1]
        return {checksums.header_name(algorithm): value, "x-amz-checksum-type": "COMPOSITE"}
    if byte_range is not None and byte_range != (0, version.size - 1):
        return {}
    headers = {checksums.header_name(a): v for a, v in stored.items()}
    headers["x-amz-checksum-type"] = version.meta.get("checksum_type", "FULL_OBJECT")
    return headers


async def get_object_attributes(api, call):
    version_id = requested_version(call)
    wanted = {a.strip() for a in call.headers.get("x-amz-object-attributes", "").split(",")
              if a.strip()}
    known = {"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"}
    if not wanted or not wanted <= known:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.",
                      extra={"ArgumentName": "x-amz-object-attributes"})
    customer_key = sse.customer_key_only(call)
    version = await find_version(api, call.bucket, call.key, version_id)
    # An SSE-C object's attributes need its key, as on S3.
    api.objects.sealing_for(version, customer_key)
    children = []
    if "ETag" in wanted:
        children.append(("ETag", version.etag))
    stored = version.meta.get("checksums", {})
    if "Checksum" in wanted and stored:
        children.append(("Checksum", [("Checksum" + a, v) for a, v in stored.items()] + [
            ("ChecksumType", version.meta.get("checksum_type", "FULL_OBJECT"))]))
    sizes = version.meta.get("parts")
    if "ObjectParts" in wanted and sizes:
        marker = integers.parameter(call.headers.get("x-amz-part-number-marker", "0"),
                                    "x-amz-part-number-marker")
        limit = min(integers.parameter(call.headers.get("x-amz-max-parts", "1000"),
                                       "x-amz-max-parts"), 1000)
        numbers = list(range(marker + 1, min(marker + limit, len(sizes)) + 1))
        part_checksums = version.meta.get("part_checksums")
        parts = []
        for number in numbers:
            part = [("PartNumber", number), ("Size", sizes[number - 1])]
            if part_checksums:
                part.append(("Checksum" + next(iter(stored)), part_checksums[number - 1]))
            parts.append(("Part", part))
        children.append(("ObjectParts", [
            ("PartsCount", len(sizes)), ("PartNumberMarker", marker),
            ("NextPartNumberMarker", numbers[-1] if numbers else marker),
            ("MaxParts", limit), ("IsTruncated", bool(numbers) and numbers[-1] < len(sizes)),
            *parts]))
    if "StorageClass" in wanted:
        children.append(("StorageClass", "STANDARD"))
    if "ObjectSize" in wanted:
        children.append(("ObjectSize", version.size))
    headers = {"content-type": "application/xml",
               "last-modified": http_date(version.last_modified)}
    headers.update(version_headers(api, call.bucket, version))
    return Response(headers=headers,
                    body=xml.document("GetObjectAttributesResponse", children))


async def put_object(api, call):
    meta = acl_meta(api, call, new_version_meta(api, call))
    require_digest_for_lock(api, call, meta)
    customer_key = sse.write_encryption(api, call)
    kms = await sse.kms_request(api, call)
    precondition = await early_write_precondition(api, call)
    body, hashers, verify, found = api.body_pipeline(call)

    def verify_and_record(stored):
        verify(stored)
        if found:
            meta["checksums"] = dict(found)
            meta["checksum_type"] = "FULL_OBJECT"

    version = await api.objects.put_object(
        call.bucket, call.key, body, owner=new_owner(call, meta), meta=meta,
        hashers=hashers, verify=verify_and_record, precondition=precondition,
        customer_key=customer_key, kms=kms)
    headers = {"etag": conditions.quoted(version.etag)}
    headers.update(sse.response_headers(api, version.meta))
    for algorithm, value in found.items():
        headers[f"x-amz-checksum-{algorithm.lower()}"] = value
    headers.update(version_headers(api, call.bucket, version))
    headers.update(expiration_headers(api, call.bucket, version))
    return Response(headers=headers)


async def early_write_precondition(api, call):
    """A conditional write's check, applied once now (so a doomed upload
    fails before its body is sent) and returned to run again at commit."""
    check = conditions.write_precondition(call.headers)
    if check is not None:
        try:
            current = await api.objects.head_object(call.bucket, call.key)
        except ObjectError as e:
            if e.code != "NoSuchKey":
                raise
            current = None
        check(current)
    return check


def new_version_meta(api, call):
    """The metadata a PUT or CreateMultipartUpload asks for: content
    headers, user metadata, tags and Object Lock settings."""
    meta = metadata_from_headers(call.headers)
    tags = tags_from_header(call.headers)
    if tags:
        meta["tags"] = tags
    meta.update(lock_meta_from_headers(api, call.headers))
    return meta


def parse_copy_source(call):
    """(bucket, key, version id or None) named by x-amz-copy-source."""
    source = call.headers["x-amz-copy-source"]
    path, _, query = source.partition("?")
    path = unquote(path).lstrip("/")
    bucket, slash, key = path.partition("/")
    if not bucket or not slash or not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": source})
    version_id = dict(parse_qsl(query, keep_blank_values=True)).get("versionId")
    if version_id == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string",
                      extra={"ArgumentName": "versionId", "ArgumentValue": ""})
    return bucket, key, version_id


async def read_copy_source(api, call):
    """(bucket, key, source Version, version id asked for or None, its SSE-C
    sealing or None) of the copy source, with the caller's right to read it
    checked before anything about it is told; an SSE-C source needs its key
    in x-amz-copy-source-server-side-encryption-customer-*."""
    source_key = sse.customer_key(call, sse.COPY_SOURCE_CUSTOMER)
    bucket, key, version_id = parse_copy_source(call)
    failure = None
    try:
        source = await api.objects.head_object(bucket, key, version_id)
    except ObjectError as e:
        if e.code not in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion", "MethodNotAllowed",
                          "InvalidArgument"):
            raise
        source, failure = None, e
    await authorization.authorize_copy_source(api, call, bucket, key, source, version_id)
    if failure is not None:
        if failure.code == "MethodNotAllowed":
            raise S3Error("InvalidRequest", "The source of a copy request may not "
                          "specifically refer to a delete marker by version id.")
        error = object_error(failure)
        if failure.code in ("NoSuchKey", "NoSuchVersion"):
            error.extra["Key"] = key
            if version_id is not None:
                error.extra["VersionId"] = version_id
        raise error
    sealing = api.objects.sealing_for(source, source_key)
    if conditions.evaluate(call.headers, source, prefix="x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed")
    return bucket, key, source, version_id, sealing


# Version metadata a copy never takes from its source: its multipart layout,
# its encryption (the copy is sealed anew), and its Object Lock state (a
# copy's lock comes from the request or the bucket's default, as in S3).
_NOT_COPIED = ("parts", *encryption.RECORD_KEYS, "retention", "legal_hold")


def _directive(call, header):
    directive = call.headers.get(header, "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", f"Unknown {header[6:].replace('-', ' ')}.",
                      extra={"ArgumentName": header, "ArgumentValue": directive})
    return directive


async def copy_object(api, call):
    bucket, key, source, source_version_id, source_sealing = await read_copy_source(api, call)
    customer_key = sse.write_encryption(api, call)
    kms = await sse.kms_request(api, call)
    directive = _directive(call, "x-amz-metadata-directive")
    tagging = _directive(call, "x-amz-tagging-directive")
    if directive == "REPLACE":
        meta = metadata_from_headers(call.headers)
    else:
        # Naming the encryption (SSE-S3 or SSE-C), a source version or new
        # tags changes what the copy is, which makes a copy onto itself legal.
        if (bucket, key) == (call.bucket, call.key) and customer_key is None \
                and sse.SSE not in call.headers and source_version_id is None \
                and tagging == "COPY":
            raise S3Error("InvalidRequest",
                          "This copy request is illegal because it is trying to copy an "
                          "object to itself without changing the object's metadata, "
                          "storage class, website redirect location or encryption "
                          "attributes.")
        meta = {k: v for k, v in source.meta.items() if k not in _NOT_COPIED + ("tags",)}
    # An object's ACL is never copied: the copy gets the one asked for.
    acl_meta(api, call, meta)
    if tagging == "COPY":
        if source.meta.get("tags"):
            meta["tags"] = dict(source.meta["tags"])
    else:
        tags = tags_from_header(call.headers)
        if tags:
            meta["tags"] = tags
    meta.update(lock_meta_from_headers(api, call.headers))
    version = await api.objects.copy_object(
        source, call.bucket, call.key, owner=new_owner(call, meta), meta=meta,
        source_sealing=source_sealing, customer_key=customer_key, kms=kms)
    body = xml.document("CopyObjectResult", [
        ("LastModified", xml.iso8601(version.last_modified)),
        ("ETag", conditions.quoted(version.etag)),
    ])
    headers = {"content-type": "application/xml"}
    headers.update(sse.response_headers(api, version.meta))
    headers.update(version_headers(api, call.bucket, version))
    source_id = version_headers(api, bucket, source).get("x-amz-version-id")
    if source_id is not None:
        headers["x-amz-copy-source-version-id"] = source_id
    return Response(headers=headers, body=body)


def deletion_headers(deletion):
    headers = {}
    if deletion.version_id is not None:
        headers["x-amz-version-id"] = deletion.version_id
    if deletion.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return headers


async def delete_object(api, call):
    version_id = requested_version(call)
    precondition = conditions.delete_precondition(
        call.headers.get("if-match"), call.headers.get("x-amz-if-match-last-modified-time"),
        call.headers.get("x-amz-if-match-size"))
    deletion = await api.objects.delete_object(
        call.bucket, call.key, authorization.owner_id(call), version_id,
        bypass_governance=version_id is not None and bypass_governance(api, call),
        precondition=precondition)
    return Response(204, deletion_headers(deletion))


async def delete_objects(api, call):
    document = await read_document(api, call, "Delete", require_digest=True)
    quiet = (xml.text(document, "Quiet", "false") or "").strip().lower() == "true"
    objects = document.findall("Object")
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    api.objects.bucket(call.bucket)
    bypass = bypass_governance(api, call)
    results = []
    for element in objects:
        key = xml.text(element, "Key")
        if key is None:
            raise S3Error("MalformedXML")
        version_id = xml.text(element, "VersionId")
        named = [("Key", key)] + ([("VersionId", version_id)] if version_id else [])
        try:
            precondition = conditions.delete_precondition(
                xml.text(element, "ETag"), xml.text(element, "LastModifiedTime"),
                xml.text(element, "Size"))
        except S3Error as e:
            results.append(("Error", named + [("Code", e.code), ("Message", e.message)]))
            continue
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            results.append(("Error", named + [("Code", "KeyTooLongError"),
                                              ("Message", "Your key is too long.")]))
            continue
        if not await authorization.may_delete(api, call, key, version_id,
                                              xml.text(element, "ETag")):
            results.append(("Error", named + [("Code", "AccessDenied"),
                                              ("Message", "Access Denied")]))
            continue
        try:
            deletion = await api.objects.delete_object(
                call.bucket, key, authorization.owner_id(call), version_id or None,
                bypass_governance=bypass, precondition=precondition)
        except (ObjectError, S3Error) as e:
            error = object_error(e) if isinstance(e, ObjectError) else e
            results.append(("Error", named + [("Code", error.code),
                                              ("Message", error.message)]))
            continue
        if not quiet:
            marker = []
            if deletion.delete_marker:
                marker = [("DeleteMarker", True),
                          ("DeleteMarkerVersionId", deletion.version_id)]
            results.append(("Deleted", named + marker))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("DeleteResult", results))
