"""Bucket policies: Put/Get/DeleteBucketPolicy and GetBucketPolicyStatus.

The policy is kept as the text the client sent (GetBucketPolicy returns
it as it came) in ``Bucket.settings["policy"]``; it is parsed and checked
before it is stored, so a stored policy always parses.
"""

from z4node.s3 import authorization, policy, xml
from z4node.s3.api import Response
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import read_body


def principal_exists(system, spec):
    """Whether a Principal entry names a key that exists."""
    if spec.kind == "access_key":
        return system.key_by_id(spec.value) is not None
    if spec.kind == "user_id":
        return system.key_by_user_id(spec.value) is not None
    if spec.kind == "name":
        return system.key_by_name(spec.value) is not None
    return True


async def put_bucket_policy(api, call):
    api.objects.bucket(call.bucket)
    body = await read_body(
        api, call, limit=policy.MAX_POLICY_BYTES,
        too_large=S3Error("MalformedPolicy", "Policy exceeds the maximum allowed document size."))
    if not body.strip():
        raise S3Error("MalformedPolicy", "Missing policy")
    parsed = policy.parse(body, call.bucket, lambda spec: principal_exists(api.system, spec))
    authorization.refuse_public_policy(api.objects.bucket(call.bucket), parsed)
    text = body.decode("utf-8")

    def store(settings):
        settings["policy"] = text
    await api.system.update_bucket_settings(call.bucket, store)
    return Response(204)


def _stored(api, call):
    bucket = api.objects.bucket(call.bucket)
    text = bucket.settings.get("policy")
    if text is None:
        raise S3Error("NoSuchBucketPolicy", extra={"BucketName": call.bucket})
    return text


async def get_bucket_policy(api, call):
    text = _stored(api, call)
    return Response(headers={"content-type": "application/json"}, body=text.encode("utf-8"))


async def delete_bucket_policy(api, call):
    bucket = api.objects.bucket(call.bucket)
    if "policy" in bucket.settings:
        await api.system.update_bucket_settings(
            call.bucket, lambda settings: settings.pop("policy", None))
    return Response(204)


async def get_bucket_policy_status(api, call):
    text = _stored(api, call)
    public = policy.parse(text, call.bucket).is_public()
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("PolicyStatus", [("IsPublic", public)]))
