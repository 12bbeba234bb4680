"""Versioning: PutBucketVersioning, GetBucketVersioning and
ListObjectVersions, and the version headers every object response shares."""

from urllib.parse import quote

from z4node.objects import versioning
from z4node.s3 import acl as acls
from z4node.s3 import conditions, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import only, read_document
from z4node.s3.handlers.listing import max_keys


def version_headers(api, bucket_name, version):
    """``x-amz-version-id`` for a version, as S3 sends it: in a bucket
    whose versioning was ever set (``null`` included), never otherwise."""
    bucket = api.system.bucket(bucket_name)
    if bucket is not None and (versioning.status(bucket) is not None
                               or version.version_id != versioning.NULL_VERSION):
        return {"x-amz-version-id": version.version_id}
    return {}


def requested_version(call):
    """The versionId a request names, or None. An empty one is refused, as S3 does."""
    version_id = call.query.get("versionId")
    if version_id == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string",
                      extra={"ArgumentName": "versionId", "ArgumentValue": ""})
    return version_id


async def put_bucket_versioning(api, call):
    document = await read_document(api, call, "VersioningConfiguration")
    status = only(document, "Status")
    mfa_delete = only(document, "MfaDelete")
    if mfa_delete is not None and mfa_delete not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    if mfa_delete == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not implemented.")
    api.objects.bucket(call.bucket)
    if status is None:
        return Response()
    if status not in (versioning.ENABLED, versioning.SUSPENDED):
        raise S3Error("MalformedXML")
    await api.objects.set_versioning(call.bucket, status)
    return Response()


async def get_bucket_versioning(api, call):
    bucket = api.objects.bucket(call.bucket)
    # A bucket whose versioning was never set answers an empty
    # configuration (no Status), as S3 does.
    status = versioning.status(bucket)
    children = [("Status", status)] if status else []
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("VersioningConfiguration", children))


async def list_object_versions(api, call):
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter", "")
    key_marker = call.query.get("key-marker") or None
    version_id_marker = call.query.get("version-id-marker") or None
    limit = max_keys(call)
    encoding = call.query.get("encoding-type")
    if encoding is not None and encoding.lower() != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      extra={"ArgumentName": "encoding-type", "ArgumentValue": encoding})

    def encode(text):
        return quote(text, safe="/") if encoding else text

    items, truncated = await api.objects.list_versions(
        call.bucket, prefix, delimiter, key_marker, version_id_marker, limit)
    names = api.system.user_names()
    bucket = api.objects.bucket(call.bucket)
    children = [("Name", call.bucket), ("Prefix", encode(prefix)),
                ("KeyMarker", encode(key_marker or "")),
                ("VersionIdMarker", version_id_marker or "")]
    if truncated and items:
        last = items[-1]
        if isinstance(last, str):
            children.append(("NextKeyMarker", encode(last)))
        else:
            children += [("NextKeyMarker", encode(last[0].key)),
                         ("NextVersionIdMarker", last[0].version_id)]
    children.append(("MaxKeys", limit))
    if delimiter:
        children.append(("Delimiter", encode(delimiter)))
    children.append(("IsTruncated", truncated))
    if encoding:
        children.append(("EncodingType", "url"))
    for item in items:
        if isinstance(item, str):
            continue
        version, is_latest = item
        owner_id = acls.reported_owner(bucket, version.owner)
        owner = [("ID", owner_id), ("DisplayName", names.get(owner_id, ""))]
        common = [("Key", encode(version.key)), ("VersionId", version.version_id),
                  ("IsLatest", is_latest),
                  ("LastModified", xml.iso8601(version.last_modified))]
        if version.delete_marker:
            children.append(("DeleteMarker", common + [("Owner", owner)]))
        else:
            children.append(("Version", common + [
                ("ETag", conditions.quoted(version.etag)), ("Size", version.size),
                ("StorageClass", "STANDARD"), ("Owner", owner)]))
    children.extend(("CommonPrefixes", [("Prefix", encode(p))])
                    for p in items if isinstance(p, str))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListVersionsResult", children))
