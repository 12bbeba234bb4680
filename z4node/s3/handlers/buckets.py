"""Bucket operations: list, create, delete, head, location."""

from z4node.s3 import acl as acls
from z4node.s3 import integers, xml
from z4node.s3.api import Response
from z4node.s3.authorization import can_see_bucket
from z4node.s3.handlers.documents import read_document
from z4node.s3.handlers.listing import make_token, untoken

# S3's largest ListBuckets page (max-buckets).
MAX_BUCKETS_PAGE = 10000


def owner_element(api, user_id):
    return [("ID", user_id), ("DisplayName", api.system.user_names().get(user_id, ""))]


async def list_buckets(api, call):
    """ListBuckets, paged as S3 pages it since 2024: ``max-buckets``
    (1..10000; without it, every bucket), ``continuation-token`` (the
    last name of the previous page, opaque to the client), ``prefix`` and
    ``bucket-region``."""
    key = call.access_key
    limit = None
    if "max-buckets" in call.query:
        limit = integers.parameter(call.query["max-buckets"], "max-buckets", minimum=1,
                                   maximum=MAX_BUCKETS_PAGE,
                                   message="Invalid max-buckets: it must be between 1 and "
                                           f"{MAX_BUCKETS_PAGE}")
    prefix = call.query.get("prefix", "")
    token = call.query.get("continuation-token")
    after = None
    if token is not None:
        after = untoken(token)
    region = call.query.get("bucket-region")
    buckets = [b for b in api.system.buckets()
               if b.name.startswith(prefix) and (after is None or b.name > after)
               and region in (None, api.region)
               and can_see_bucket(api.system, key, b.name)]
    children = [("Owner", owner_element(api, key.user_id))]
    truncated = limit is not None and len(buckets) > limit
    buckets = buckets[:limit]
    children.append(("Buckets", [
        ("Bucket", [("Name", b.name), ("CreationDate", xml.iso8601(b.created)),
                    ("BucketRegion", api.region)]) for b in buckets]))
    if truncated:
        children.append(("ContinuationToken", make_token(buckets[-1].name)))
    if "prefix" in call.query:
        children.append(("Prefix", prefix))
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("ListAllMyBucketsResult", children))


async def create_bucket(api, call):
    await read_document(api, call, "CreateBucketConfiguration", optional=True)
    key = call.access_key
    settings = acls.new_bucket_settings(
        call.headers, key.user_id, lambda user_id: api.system.key_by_user_id(user_id) is not None,
        api.objects.default_ownership)
    lock = call.headers.get("x-amz-bucket-object-lock-enabled", "").strip().lower()
    await api.objects.create_bucket(call.bucket, key, settings, object_lock=lock == "true")
    return Response(headers={"location": f"/{call.bucket}"})


async def delete_bucket(api, call):
    await api.objects.delete_bucket(call.bucket)
    return Response(204)


async def head_bucket(api, call):
    api.objects.bucket(call.bucket)
    return Response(headers={"x-amz-bucket-region": api.region})


async def get_bucket_location(api, call):
    api.objects.bucket(call.bucket)
    # us-east-1 is reported as an empty LocationConstraint, as S3 does.
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("LocationConstraint", []))
