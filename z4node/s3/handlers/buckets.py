"""Bucket operations: list, create, delete, head, location."""

from z4node.s3 import acl as acls
from z4node.s3 import xml
from z4node.s3.api import Response
from z4node.s3.authorization import can_see_bucket
from z4node.s3.handlers.documents import read_document


def owner_element(api, user_id):
    return [("ID", user_id), ("DisplayName", api.system.user_names().get(user_id, ""))]


async def list_buckets(api, call):
    key = call.access_key
    buckets = [b for b in api.system.buckets() if can_see_bucket(api.system, key, b.name)]
    body = xml.document("ListAllMyBucketsResult", [
        ("Owner", owner_element(api, key.user_id)),
        ("Buckets", [("Bucket", [("Name", b.name), ("CreationDate", xml.iso8601(b.created))])
                     for b in buckets]),
    ])
    return Response(headers={"content-type": "application/xml"}, body=body)


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
