"""ACLs and object ownership: Get/PutBucketAcl, Get/PutObjectAcl and
Get/Put/DeleteBucketOwnershipControls. The ACL forms themselves (canned,
grant headers, XML) are resolved in ``z4node.s3.acl``."""

from z4node.s3 import acl as acls
from z4node.s3 import authorization
from z4node.s3 import xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.objects import find_version
from z4node.s3.handlers.versioning import requested_version
from z4node.s3.handlers.documents import read_body, read_document

# An AccessControlPolicy of 100 grants is a few KB; S3 allows 100 grants.
MAX_ACL_BODY = 64 * 1024


def user_exists(api):
    return lambda user_id: api.system.key_by_user_id(user_id) is not None


async def _requested_acl(api, call, owner, bucket_owner, for_bucket):
    """The ACL a PutBucketAcl / PutObjectAcl asks for, from its headers or
    its body (not both)."""
    body = await read_body(api, call, limit=MAX_ACL_BODY,
                           too_large=S3Error("MalformedACLError"))
    from_headers = acls.from_headers(call.headers, owner, bucket_owner, for_bucket,
                                     user_exists(api))
    if from_headers is not None:
        if body.strip():
            raise S3Error("UnexpectedContent")
        return from_headers
    if not body.strip():
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header",
                      extra={"MissingHeaderName": "x-amz-acl"})
    try:
        document = await api.parse_xml(body, "AccessControlPolicy")
    except S3Error:
        raise S3Error("MalformedACLError") from None
    acl = acls.from_xml(document, owner, user_exists(api))
    # ACL headers met Block Public Access in authorize(); a document meets it here.
    authorization.refuse_public_acl(api.objects.bucket(call.bucket), acl)
    return acl


def _acl_response(api, acl):
    return Response(headers={"content-type": "application/xml"},
                    body=acls.to_xml(acl, api.system.user_names()))


async def get_bucket_acl(api, call):
    bucket = api.objects.bucket(call.bucket)
    return _acl_response(api, acls.bucket_acl(bucket))


async def put_bucket_acl(api, call):
    bucket = api.objects.bucket(call.bucket)
    acl = await _requested_acl(api, call, bucket.owner, bucket.owner, True)
    if not acls.acls_enabled(bucket):
        if not acl.only_full_control_to(bucket.owner):
            raise S3Error("AccessControlListNotSupported")
        return Response()

    def store(settings):
        if acl == acls.Acl.private(bucket.owner):
            settings.pop("acl", None)
        else:
            settings["acl"] = acl.to_json()
    await api.system.update_bucket_settings(call.bucket, store)
    return Response()


async def _head(api, call):
    """The version whose ACL is asked for: the latest, or ``versionId``'s."""
    return await find_version(api, call.bucket, call.key, requested_version(call))


async def get_object_acl(api, call):
    bucket = api.objects.bucket(call.bucket)
    version = await _head(api, call)
    return _acl_response(api, acls.object_acl(bucket, version))


async def put_object_acl(api, call):
    bucket = api.objects.bucket(call.bucket)
    version = await _head(api, call)
    owner = acls.object_acl(bucket, version).owner
    acl = await _requested_acl(api, call, owner, bucket.owner, False)
    if not acls.acls_enabled(bucket):
        if not acl.only_full_control_to(bucket.owner):
            raise S3Error("AccessControlListNotSupported")
        return Response()
    stored = acl.to_json()

    def store(version):
        meta = dict(version.meta)
        meta["acl"] = stored
        return meta
    await api.objects.update_version_meta(call.bucket, call.key, requested_version(call),
                                          store)
    return Response()


async def get_bucket_ownership_controls(api, call):
    bucket = api.objects.bucket(call.bucket)
    mode = acls.ownership(bucket)
    if mode is None:
        raise S3Error("OwnershipControlsNotFoundError", extra={"BucketName": call.bucket})
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("OwnershipControls", [
                        ("Rule", [("ObjectOwnership", mode)])]))


async def put_bucket_ownership_controls(api, call):
    bucket = api.objects.bucket(call.bucket)
    document = await read_document(api, call, "OwnershipControls")
    rules = document.findall("Rule")
    if len(rules) != 1 or len(list(document)) != 1:
        raise S3Error("MalformedXML")
    mode = (xml.text(rules[0], "ObjectOwnership") or "").strip()
    if mode not in acls.OWNERSHIPS:
        raise S3Error("MalformedXML")
    if mode == acls.ENFORCED:
        stored = bucket.settings.get("acl")
        if stored is not None and not acls.Acl.from_json(stored).only_full_control_to(
                bucket.owner):
            raise S3Error("InvalidBucketAclWithObjectOwnership")

    def store(settings):
        settings["ownership"] = mode
        if mode == acls.ENFORCED:
            settings.pop("acl", None)
    await api.system.update_bucket_settings(call.bucket, store)
    return Response()


async def delete_bucket_ownership_controls(api, call):
    api.objects.bucket(call.bucket)

    def store(settings):
        settings["ownership"] = None
    await api.system.update_bucket_settings(call.bucket, store)
    return Response(204)
