"""Authorization: the one function that decides whether a request may do
what it asks. Every handler is reached only through :func:`authorize`.

A key is one account. The admin key may do everything. Any key may list
the buckets it can see and create buckets (it owns what it creates). On a
bucket a key may do what its grant allows: ``read`` (GET, HEAD, listings),
``write`` (PUT, DELETE, multipart), ``owner`` (everything, bucket settings
and deletion included); the bucket's owner holds an owner grant. Anonymous
requests are denied (bucket policies and ACLs come later and will be asked
here too).
"""

from z4node.s3.errors import S3Error

READ = "read"
WRITE = "write"
OWNER = "owner"
ACCOUNT = "account"  # needs only a valid key

_NEEDS = {
    "ListBuckets": ACCOUNT,
    "CreateBucket": ACCOUNT,
    "HeadBucket": READ,
    "GetBucketLocation": READ,
    "GetBucketVersioning": READ,
    "ListObjects": READ,
    "ListObjectsV2": READ,
    "GetObject": READ,
    "HeadObject": READ,
    "GetObjectAttributes": READ,
    "PutObject": WRITE,
    "CopyObject": WRITE,
    "DeleteObject": WRITE,
    "DeleteObjects": WRITE,
    "CreateMultipartUpload": WRITE,
    "UploadPart": WRITE,
    "UploadPartCopy": WRITE,
    "CompleteMultipartUpload": WRITE,
    "AbortMultipartUpload": WRITE,
    "ListParts": WRITE,
    "ListMultipartUploads": WRITE,
    "DeleteBucket": OWNER,
}


def may(system, key, bucket, need):
    """Whether ``key`` (AccessKey or None) has ``need`` on ``bucket``."""
    if key is None:
        return False
    if key.is_admin or need == ACCOUNT:
        return True
    grant = system.grant(bucket, key.access_key_id)
    if grant is None:
        return False
    if grant.can_own:
        return True
    return grant.can_read if need == READ else grant.can_write if need == WRITE else False


def authorize(system, key, operation, bucket):
    """Raise AccessDenied unless ``key`` may perform operation on bucket."""
    if not may(system, key, bucket, _NEEDS[operation]):
        raise S3Error("AccessDenied")


def can_see_bucket(system, key, bucket):
    """Whether ListBuckets shows ``bucket`` to ``key``."""
    return may(system, key, bucket, READ) or may(system, key, bucket, WRITE)
