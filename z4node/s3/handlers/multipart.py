"""Multipart uploads: create, upload part (and part copy), complete, abort,
list parts, list uploads."""

from z4node.objects import checksums
from z4node.objects.errors import ObjectError
from z4node.s3 import authorization, conditions, integers, sse, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.buckets import owner_element
from z4node.s3.handlers.documents import read_document
from z4node.s3.handlers.lifecycle import abort_headers, expiration_headers
from z4node.s3.handlers.object_lock import require_digest_for_lock
from z4node.s3.handlers.objects import (acl_meta, early_write_precondition, new_owner,
                                        new_version_meta, read_copy_source)
from z4node.s3.handlers.versioning import version_headers
from z4node.objects.service import MAX_PARTS

MAX_LISTED = 1000


def _part_number(call):
    return integers.parameter(
        call.query.get("partNumber", ""), "partNumber", minimum=1, maximum=MAX_PARTS,
        message="Part number must be an integer between 1 and 10000, inclusive")


def _limit(call, name):
    return min(integers.parameter(call.query.get(name, str(MAX_LISTED)), name), MAX_LISTED)


async def create_upload(api, call):
    meta = acl_meta(api, call, new_version_meta(api, call))
    headers = {"content-type": "application/xml"}
    algorithm = call.headers.get("x-amz-checksum-algorithm")
    if algorithm is not None:
        algorithm = algorithm.upper()
        kind = checksums.checksum_type(algorithm, call.headers.get("x-amz-checksum-type"))
        meta["checksum"] = {"algorithm": algorithm, "type": kind}
        headers["x-amz-checksum-algorithm"] = algorithm
        headers["x-amz-checksum-type"] = kind
    customer_key = sse.write_encryption(api, call)
    kms = await sse.kms_request(api, call)
    upload = await api.objects.create_upload(
        call.bucket, call.key, owner=authorization.owner_id(call), meta=meta,
        customer_key=customer_key, kms=kms)
    body = xml.document("InitiateMultipartUploadResult", [
        ("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload.upload_id)])
    headers.update(sse.response_headers(api, upload.meta))
    headers.update(abort_headers(api, call.bucket, upload))
    return Response(headers=headers, body=body)


async def upload_part(api, call):
    number = _part_number(call)
    upload = await api.objects.get_upload(call.bucket, call.key, call.query["uploadId"])
    customer_key = sse.customer_key_only(call)
    require_digest_for_lock(api, call, upload.meta, what="Put Part")
    body, hashers, verify, found = api.body_pipeline(call)
    # An upload created with a checksum algorithm needs every part's
    # checksum; compute it when the client sent none.
    setting = upload.meta.get("checksum")
    computed = None
    trailer = call.headers.get("x-amz-trailer", "").strip().lower()
    if setting is not None and setting["algorithm"] not in found \
            and trailer != checksums.header_name(setting["algorithm"]):
        computed = checksums.new_checksum(setting["algorithm"])
        hashers.append(computed)
    meta = {"checksums": {}}

    def verify_and_record(stored):
        verify(stored)
        meta["checksums"].update(found)
        if computed is not None:
            meta["checksums"][setting["algorithm"]] = computed.b64()

    part = await api.objects.upload_part(
        call.bucket, call.key, upload.upload_id, number, body,
        hashers=hashers, verify=verify_and_record, meta=meta, customer_key=customer_key)
    headers = {"etag": conditions.quoted(part.etag)}
    headers.update(sse.response_headers(api, upload.meta))
    for algorithm, value in meta["checksums"].items():
        headers[checksums.header_name(algorithm)] = value
    return Response(headers=headers)


async def upload_part_copy(api, call):
    number = _part_number(call)
    customer_key = sse.customer_key_only(call)
    _, _, source, _, source_sealing = await read_copy_source(api, call)
    upload = await api.objects.get_upload(call.bucket, call.key, call.query["uploadId"])
    start, end = 0, source.size - 1
    spec = call.headers.get("x-amz-copy-source-range")
    if spec is not None:
        start, end = conditions.parse_copy_range(spec, source.size)
    part = await api.objects.copy_part(call.bucket, call.key, call.query["uploadId"],
                                       number, source, start, end,
                                       source_sealing=source_sealing,
                                       customer_key=customer_key)
    body = xml.document("CopyPartResult", [
        ("LastModified", xml.iso8601(part.last_modified)),
        ("ETag", conditions.quoted(part.etag))])
    headers = {"content-type": "application/xml"}
    headers.update(sse.response_headers(api, upload.meta))
    return Response(headers=headers, body=body)


async def complete_upload(api, call):
    # Its x-amz-checksum-* headers are the whole object's checksum.
    document = await read_document(api, call, "CompleteMultipartUpload",
                                   checksum_headers=False)
    requested = []
    for element in document.findall("Part"):
        number, etag = xml.text(element, "PartNumber"), xml.text(element, "ETag")
        if number is not None:
            number = integers.non_negative(number.strip(), integers.INT32_MAX)
        if number is None or etag is None:
            raise S3Error("MalformedXML")
        claimed = {algorithm: xml.text(element, "Checksum" + algorithm).strip()
                   for algorithm in checksums.ALGORITHMS
                   if xml.text(element, "Checksum" + algorithm) is not None}
        requested.append((number, etag.strip(), claimed))
    if not requested:
        raise S3Error("MalformedXML")
    expected = None
    for algorithm in checksums.ALGORITHMS:
        value = call.headers.get(checksums.header_name(algorithm))
        if value is not None:
            expected = (algorithm, value)
    # Optional here (S3 needs them only for checksums); checked if given.
    customer_key = sse.customer_key(call)
    try:
        upload = await api.objects.get_upload(call.bucket, call.key, call.query["uploadId"])
        # The object's owner follows the ACL its upload was created with.
        owner = new_owner(call, upload.meta)
        precondition = await early_write_precondition(api, call)
    except ObjectError as e:
        if e.code != "NoSuchUpload":
            raise
        # Perhaps a retry of a completion that succeeded: complete_upload
        # answers with what that made (whose owner is stored), and its
        # If-None-Match: * was met by the completion it repeats.
        owner, precondition = authorization.owner_id(call), None
    version = await api.objects.complete_upload(
        call.bucket, call.key, call.query["uploadId"], requested,
        owner=owner, precondition=precondition,
        expected_checksum=expected, customer_key=customer_key)
    host = call.headers.get("host", "")
    scheme = "https" if call.secure else "http"
    children = [("Location", f"{scheme}://{host}/{call.bucket}/{call.key}"),
                ("Bucket", call.bucket), ("Key", call.key),
                ("ETag", conditions.quoted(version.etag))]
    headers = {"content-type": "application/xml"}
    headers.update(sse.response_headers(api, version.meta))
    for algorithm, value in version.meta.get("checksums", {}).items():
        children += [("Checksum" + algorithm, value),
                     ("ChecksumType", version.meta["checksum_type"])]
        headers[checksums.header_name(algorithm)] = value
        headers["x-amz-checksum-type"] = version.meta["checksum_type"]
    headers.update(version_headers(api, call.bucket, version))
    headers.update(expiration_headers(api, call.bucket, version))
    return Response(headers=headers, body=xml.document("CompleteMultipartUploadResult", children))


async def abort_upload(api, call):
    await api.objects.abort_upload(call.bucket, call.key, call.query["uploadId"])
    return Response(204)


async def list_parts(api, call):
    marker = integers.parameter(call.query.get("part-number-marker", "0") or "0",
                                "part-number-marker", message="Invalid part-number-marker")
    limit = _limit(call, "max-parts")
    upload, parts, truncated = await api.objects.list_parts(
        call.bucket, call.key, call.query["uploadId"], marker, limit)
    owner = owner_element(api, upload.owner)
    children = [("Bucket", call.bucket), ("Key", call.key),
                ("UploadId", upload.upload_id), ("Initiator", owner), ("Owner", owner),
                ("StorageClass", "STANDARD"), ("PartNumberMarker", marker),
                ("NextPartNumberMarker", parts[-1].part_number if parts else marker),
                ("MaxParts", limit), ("IsTruncated", truncated)]
    for part in parts:
        # The latest upload of each part: its ETag and checksums, which a
        # client resuming an upload completes with.
        children.append(("Part", [("PartNumber", part.part_number),
                                  ("LastModified", xml.iso8601(part.last_modified)),
                                  ("ETag", conditions.quoted(part.etag)),
                                  ("Size", part.size)] + [
            ("Checksum" + algorithm, value)
            for algorithm, value in sorted(part.meta.get("checksums", {}).items())]))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListPartsResult", children))


async def list_uploads(api, call):
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    key_marker = call.query.get("key-marker") or None
    upload_id_marker = call.query.get("upload-id-marker") or None
    limit = _limit(call, "max-uploads")
    items, truncated = await api.objects.list_uploads(
        call.bucket, prefix, delimiter, key_marker, upload_id_marker, limit)
    children = [("Bucket", call.bucket), ("KeyMarker", key_marker or ""),
                ("UploadIdMarker", upload_id_marker or "")]
    if truncated and items:
        last = items[-1]
        children += [("NextKeyMarker", last if isinstance(last, str) else last.key),
                     ("NextUploadIdMarker", "" if isinstance(last, str) else last.upload_id)]
    children += [("Prefix", prefix), ("MaxUploads", limit), ("IsTruncated", truncated)]
    if delimiter:
        children.append(("Delimiter", delimiter))
    for upload in items:
        if isinstance(upload, str):
            continue
        owner = owner_element(api, upload.owner)
        children.append(("Upload", [("Key", upload.key), ("UploadId", upload.upload_id),
                                    ("Initiator", owner), ("Owner", owner),
                                    ("StorageClass", "STANDARD"),
                                    ("Initiated", xml.iso8601(upload.initiated))]))
    children.extend(("CommonPrefixes", [("Prefix", p)]) for p in items if isinstance(p, str))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListMultipartUploadsResult", children))
