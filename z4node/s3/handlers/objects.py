"""Object operations: GetObject/HeadObject, PutObject, CopyObject,
DeleteObject and DeleteObjects."""

import hashlib
from urllib.parse import parse_qsl, unquote

from z4node.objects import checksums, encryption
from z4node.objects.errors import ObjectError
from z4node.s3 import acl as acls
from z4node.s3 import authorization, conditions, sse, xml
from z4node.s3.api import Response, header_value, http_date
from z4node.s3.errors import S3Error
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
    user = {name[len("x-amz-meta-"):]: value for name, value in headers.items()
            if name.startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge")
    return {"content-type": headers.get("content-type") or "binary/octet-stream",
            "headers": stored, "user": user}


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
        headers["x-amz-meta-" + name] = value
    return headers


def check_version_id(call):
    version_id = call.query.get("versionId")
    if version_id is not None and version_id != "null":
        raise S3Error("NoSuchVersion", extra={"Key": call.key, "VersionId": version_id})


async def get_object(api, call):
    check_version_id(call)
    customer_key = sse.check_read(call)
    try:
        version = await api.objects.head_object(call.bucket, call.key)
    except ObjectError as e:
        if e.code == "NoSuchKey":
            raise S3Error("NoSuchKey", extra={"Key": call.key}) from None
        raise
    sealing = api.objects.sealing_for(version, customer_key)
    headers = object_headers(version)
    headers.update(sse.response_headers(api, version.meta))
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
        number = _positive_int(part_number, "partNumber")
        byte_range = part_range(version, number)
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
    return Response(status, headers, stream=api.objects.read(version, start, end, sealing))


def _count(value, name):
    if not value.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer",
                      extra={"ArgumentName": name, "ArgumentValue": value})
    return int(value)


def _positive_int(value, name):
    number = _count(value, name)
    if number < 1:
        raise S3Error("InvalidArgument", f"{name} must be a positive integer",
                      extra={"ArgumentName": name, "ArgumentValue": value})
    return number


def part_range(version, number):
    """Bytes (start, end) of part ``number``; an object not made by a
    multipart upload is its own part 1."""
    sizes = version.meta.get("parts") or [version.size]
    if number > len(sizes):
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable",
                      status=416, extra={"PartNumberRequested": str(number),
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
        value = version.meta["part_checksums"][int(part_number) - 1]
        return {checksums.header_name(algorithm): value, "x-amz-checksum-type": "COMPOSITE"}
    if byte_range is not None and byte_range != (0, version.size - 1):
        return {}
    headers = {checksums.header_name(a): v for a, v in stored.items()}
    headers["x-amz-checksum-type"] = version.meta.get("checksum_type", "FULL_OBJECT")
    return headers


async def get_object_attributes(api, call):
    check_version_id(call)
    wanted = {a.strip() for a in call.headers.get("x-amz-object-attributes", "").split(",")
              if a.strip()}
    known = {"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"}
    if not wanted or not wanted <= known:
        raise S3Error("InvalidArgument", "Invalid attribute name specified.",
                      extra={"ArgumentName": "x-amz-object-attributes"})
    customer_key = sse.check_read(call)
    try:
        version = await api.objects.head_object(call.bucket, call.key)
    except ObjectError as e:
        if e.code == "NoSuchKey":
            raise S3Error("NoSuchKey", extra={"Key": call.key}) from None
        raise
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
        marker = _count(call.headers.get("x-amz-part-number-marker", "0"),
                        "x-amz-part-number-marker")
        limit = min(_count(call.headers.get("x-amz-max-parts", "1000"), "x-amz-max-parts"), 1000)
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
    return Response(headers={"content-type": "application/xml",
                             "last-modified": http_date(version.last_modified)},
                    body=xml.document("GetObjectAttributesResponse", children))


async def put_object(api, call):
    meta = acl_meta(api, call, metadata_from_headers(call.headers))
    customer_key = sse.write_encryption(api, call)
    precondition = await early_write_precondition(api, call)
    body, hashers, verify, found = api.body_pipeline(call)

    def verify_and_record(stored):
        verify(stored)
        if found:
            meta["checksums"] = dict(found)
            meta["checksum_type"] = "FULL_OBJECT"

    version = await api.objects.put_object(
        call.bucket, call.key, body, owner=authorization.owner_id(call), meta=meta,
        hashers=hashers, verify=verify_and_record, precondition=precondition,
        customer_key=customer_key)
    headers = {"etag": conditions.quoted(version.etag)}
    headers.update(sse.response_headers(api, version.meta))
    for algorithm, value in found.items():
        headers[f"x-amz-checksum-{algorithm.lower()}"] = value
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


def parse_copy_source(call):
    """(bucket, key, version id or None) named by x-amz-copy-source."""
    source = call.headers["x-amz-copy-source"]
    path, _, query = source.partition("?")
    path = unquote(path).lstrip("/")
    bucket, slash, key = path.partition("/")
    if not bucket or not slash or not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": source})
    version_id = dict(parse_qsl(query)).get("versionId")
    return bucket, key, version_id


async def read_copy_source(api, call):
    """(bucket, key, head version, its SSE-C sealing or None) of the copy
    source, with the caller's right to read it checked first; an SSE-C
    source needs its key in x-amz-copy-source-server-side-encryption-
    customer-*."""
    source_key = sse.customer_key(call, sse.COPY_SOURCE_CUSTOMER)
    bucket, key, version_id = parse_copy_source(call)
    try:
        source = await api.objects.head_object(bucket, key)
    except ObjectError as e:
        if e.code not in ("NoSuchKey", "NoSuchBucket"):
            raise
        source = None
    await authorization.authorize_copy_source(api, call, bucket, key, source, version_id)
    if version_id is not None and version_id != "null":
        raise S3Error("NoSuchVersion", extra={"Key": key, "VersionId": version_id})
    if source is None:
        api.objects.bucket(bucket)
        raise S3Error("NoSuchKey", extra={"Key": key})
    sealing = api.objects.sealing_for(source, source_key)
    if conditions.evaluate(call.headers, source, prefix="x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed")
    return bucket, key, source, sealing


async def copy_object(api, call):
    bucket, key, source, source_sealing = await read_copy_source(api, call)
    customer_key = sse.write_encryption(api, call)
    directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.",
                      extra={"ArgumentName": "x-amz-metadata-directive",
                             "ArgumentValue": directive})
    if directive == "REPLACE":
        meta = metadata_from_headers(call.headers)
    else:
        # Naming the encryption (SSE-S3 or SSE-C) changes the object's
        # encryption attributes, which makes a copy onto itself legal.
        if (bucket, key) == (call.bucket, call.key) and customer_key is None \
                and sse.SSE not in call.headers:
            raise S3Error("InvalidRequest",
                          "This copy request is illegal because it is trying to copy an "
                          "object to itself without changing the object's metadata, "
                          "storage class, website redirect location or encryption "
                          "attributes.")
        meta = {k: v for k, v in source.meta.items()
                if k not in ("parts", encryption.META_KEY)}
    # An object's ACL is never copied: the copy gets the one asked for.
    acl_meta(api, call, meta)
    version = await api.objects.copy_object(
        source, call.bucket, call.key, owner=authorization.owner_id(call), meta=meta,
        source_sealing=source_sealing, customer_key=customer_key)
    body = xml.document("CopyObjectResult", [
        ("LastModified", xml.iso8601(version.last_modified)),
        ("ETag", conditions.quoted(version.etag)),
    ])
    headers = {"content-type": "application/xml"}
    headers.update(sse.response_headers(api, version.meta))
    return Response(headers=headers, body=body)


async def delete_object(api, call):
    check_version_id(call)
    await api.objects.delete_object(call.bucket, call.key, authorization.owner_id(call))
    return Response(204)


async def delete_objects(api, call):
    if "content-md5" not in call.headers and not any(
            h.startswith("x-amz-checksum-") for h in call.headers):
        raise S3Error("InvalidRequest",
                      "Missing required header for this request: Content-MD5")
    body, hashers, verify, _ = api.body_pipeline(call)
    raw = bytearray()
    async for piece in body:
        raw += piece
        if len(raw) > api.max_xml_body:
            raise S3Error("MalformedXML", "The XML you provided was too large.")
    raw = bytes(raw)
    _verify_small_body(raw, hashers, verify)
    document = xml.parse(raw, "Delete")
    quiet = (xml.text(document, "Quiet", "false") or "").strip().lower() == "true"
    objects = document.findall("Object")
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    results = []
    for element in objects:
        key = xml.text(element, "Key")
        if key is None:
            raise S3Error("MalformedXML")
        version_id = xml.text(element, "VersionId")
        if version_id is not None and version_id not in ("null", ""):
            results.append(("Error", [("Key", key), ("VersionId", version_id),
                                      ("Code", "NoSuchVersion"),
                                      ("Message", "The specified version does not exist.")]))
            continue
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            results.append(("Error", [("Key", key), ("Code", "KeyTooLongError"),
                                      ("Message", "Your key is too long.")]))
            continue
        if not await authorization.may_delete(api, call, key):
            results.append(("Error", [("Key", key), ("Code", "AccessDenied"),
                                      ("Message", "Access Denied")]))
            continue
        await api.objects.delete_object(call.bucket, key, authorization.owner_id(call))
        if not quiet:
            results.append(("Deleted", [("Key", key)]))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("DeleteResult", results))


class _Digests:
    def __init__(self, md5):
        self.md5 = md5


def _verify_small_body(raw, hashers, verify):
    """Run an in-memory body through the same digest checks as an upload."""
    for hasher in hashers:
        hasher.update(raw)
    verify(_Digests(hashlib.md5(raw).digest()))
