"""Block Public Access on a bucket: Put/Get/DeletePublicAccessBlock.

The configuration (its four flags) is kept in the bucket's settings
(``authorization.BLOCK_SETTING``), so it replicates with the
bucket's other settings; a new bucket starts with the node's default
(``--block-public-access-default``: all four on; off unless given). What
the flags do is enforced by ``z4node.s3.authorization``, the one place
that decides.

Account-level Block Public Access (the S3 Control API) does not exist
here: a node has no accounts, and the node default plays that part for
new buckets.
"""

from z4node.s3 import xml
from z4node.s3.api import Response
from z4node.s3.authorization import BLOCK_FLAGS, BLOCK_SETTING
from z4node.s3.errors import S3Error
from z4node.s3.handlers.documents import only, read_document


def all_blocked():
    """The configuration ``--block-public-access-default`` gives new
    buckets (as AWS gives every new bucket since April 2023)."""
    return {flag: True for flag in BLOCK_FLAGS}


def _flag(document, name):
    text = only(document, name)
    if text is None:
        # S3 takes a missing flag as false.
        return False
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise S3Error("MalformedXML")
    return value == "true"


async def put_public_access_block(api, call):
    api.objects.bucket(call.bucket)
    document = await read_document(api, call, "PublicAccessBlockConfiguration",
                                   require_digest=True)
    if any(child.tag not in BLOCK_FLAGS for child in document):
        raise S3Error("MalformedXML")
    config = {flag: _flag(document, flag) for flag in BLOCK_FLAGS}
    await api.objects.set_bucket_setting(call.bucket, BLOCK_SETTING, config)
    return Response()


async def get_public_access_block(api, call):
    config = api.objects.bucket(call.bucket).settings.get(BLOCK_SETTING)
    if config is None:
        raise S3Error("NoSuchPublicAccessBlockConfiguration",
                      extra={"BucketName": call.bucket})
    return Response(headers={"content-type": "application/xml"},
                    body=xml.document("PublicAccessBlockConfiguration",
                                      [(flag, bool(config.get(flag))) for flag in BLOCK_FLAGS]))


async def delete_public_access_block(api, call):
    api.objects.bucket(call.bucket)
    await api.objects.set_bucket_setting(call.bucket, BLOCK_SETTING, None)
    return Response(204)
