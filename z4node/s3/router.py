"""The router: every S3 request becomes one :class:`Endpoint` (operation,
bucket, key) before any handler runs. Sub-resources the server does not
implement answer NotImplemented from here, so no request is ever accepted
and silently ignored.

Paths are read from the raw request bytes: keys contain ``/``, ``//`` and
escapes, and the signature covers the raw bytes.
"""

from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

from z4node.s3.errors import S3Error

# Object keys are at most 1024 bytes of UTF-8 (S3's limit).
MAX_KEY_BYTES = 1024

# Sub-resources S3 has that this server does not implement yet.
UNIMPLEMENTED = frozenset({
    "accelerate", "analytics",
    "intelligent-tiering", "inventory",
    "metadataTable", "metrics", "notification",
    "replication", "requestPayment", "restore", "select",
    "torrent", "website", "renameObject", "session",
})
# Sub-resources of buckets only: on an object they name nothing.
BUCKET_ONLY = frozenset({"policy", "policyStatus", "ownershipControls", "publicAccessBlock",
                         "logging"})
# Bucket sub-resource -> {method: operation}.
_BUCKET_SETTINGS = {
    "policy": {"GET": "GetBucketPolicy", "PUT": "PutBucketPolicy",
               "DELETE": "DeleteBucketPolicy"},
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
    "publicAccessBlock": {"GET": "GetPublicAccessBlock", "PUT": "PutPublicAccessBlock",
                          "DELETE": "DeletePublicAccessBlock"},
    "acl": {"GET": "GetBucketAcl", "PUT": "PutBucketAcl"},
    "ownershipControls": {"GET": "GetBucketOwnershipControls",
                          "PUT": "PutBucketOwnershipControls",
                          "DELETE": "DeleteBucketOwnershipControls"},
    "encryption": {"GET": "GetBucketEncryption", "PUT": "PutBucketEncryption",
                   "DELETE": "DeleteBucketEncryption"},
    "logging": {"GET": "GetBucketLogging", "PUT": "PutBucketLogging"},
}

# Bucket sub-resources with a configuration document: query name ->
# the operation's name after Get/Put/Delete (None: that verb does not exist).
_BUCKET_CONFIGURATIONS = {
    "tagging": ("GetBucketTagging", "PutBucketTagging", "DeleteBucketTagging"),
    "lifecycle": ("GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration",
                  "DeleteBucketLifecycle"),
    "cors": ("GetBucketCors", "PutBucketCors", "DeleteBucketCors"),
    "object-lock": ("GetObjectLockConfiguration", "PutObjectLockConfiguration", None),
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", None),
}
# Object sub-resources likewise.
_OBJECT_CONFIGURATIONS = {
    "tagging": ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging"),
    "retention": ("GetObjectRetention", "PutObjectRetention", None),
    "legal-hold": ("GetObjectLegalHold", "PutObjectLegalHold", None),
}
_VERBS = {"GET": 0, "PUT": 1, "DELETE": 2}


@dataclass
class Endpoint:
    operation: str
    bucket: str | None
    key: str | None


def query_parameters(query_text):
    """The query as operations read it: ``{name: value}``, the first of a
    repeated name winning, ``+`` read as a space and escapes decoded (as
    ``urllib.parse.parse_qsl`` with blank values kept, which cost a tenth
    of a small GET where most parameters need neither)."""
    query = {}
    for part in query_text.split("&"):
        if part:
            name, _, value = part.partition("=")
            query.setdefault(_form_decode(name), _form_decode(value))
    return query


def _form_decode(text):
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text) if "%" in text else text


def _path_text(raw_path):
    try:
        text = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.") from None
    if not text.startswith("/"):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.")
    return text[1:]


def _checked_key(key):
    if key == "":
        return None
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    return key


def decode_path(raw_path, host_bucket=None):
    """(bucket or None, key or None) of a request.

    Path style: ``/bucket/key``. Virtual-host style (``host_bucket`` came
    from the Host header): the whole path is the key.
    """
    text = _path_text(raw_path)
    if host_bucket is not None:
        return host_bucket, _checked_key(text)
    bucket, _, key = text.partition("/")
    if not bucket:
        return None, None
    return bucket, _checked_key(key)


def host_bucket(host, domains):
    """The bucket named by a virtual-host-style Host header
    (``bucket.s3.example.test`` for domain ``s3.example.test``), or None."""
    if not domains or not host:
        return None
    name = host.lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    for domain in domains:
        if name.endswith("." + domain) and len(name) > len(domain) + 1:
            return name[:-len(domain) - 1]
    return None


def route(method, bucket, key, query, headers):
    """The operation a request asks for; raises S3Error for the rest."""
    for name in query:
        if name in UNIMPLEMENTED:
            raise S3Error("NotImplemented",
                          f"The {name} sub-resource is not implemented.")
    if bucket is None:
        if method in ("GET", "HEAD"):
            return Endpoint("ListBuckets", None, None)
        raise S3Error("MethodNotAllowed")
    if method == "OPTIONS":
        # A CORS preflight: answered from the bucket's CORS rules, before
        # (and without) authentication, as browsers send it unsigned.
        return Endpoint("PreflightCors", bucket, key)
    configurations = _BUCKET_CONFIGURATIONS if key is None else _OBJECT_CONFIGURATIONS
    for name, operations in configurations.items():
        if name in query and method in _VERBS:
            operation = operations[_VERBS[method]]
            if operation is None:
                raise S3Error("MethodNotAllowed")
            return Endpoint(operation, bucket, key)
    if key is None:
        operation = _bucket_operation(method, query)
    else:
        operation = _object_operation(method, query, headers)
    return Endpoint(operation, bucket, key)


def _bucket_operation(method, query):
    for name, methods in _BUCKET_SETTINGS.items():
        if name in query:
            if method not in methods:
                raise S3Error("MethodNotAllowed")
            return methods[method]
    if method == "GET":
        if "location" in query:
            return "GetBucketLocation"
        if "versions" in query:
            return "ListObjectVersions"
        if "uploads" in query:
            return "ListMultipartUploads"
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        return "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        return "CreateBucket"
    if method == "DELETE":
        return "DeleteBucket"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        # A browser's form upload (presigned POST): signed by its form fields.
        return "PostObject"
    raise S3Error("MethodNotAllowed")


def _object_operation(method, query, headers):
    for name in BUCKET_ONLY:
        if name in query:
            raise S3Error("InvalidRequest", f"The {name} sub-resource is one of buckets.")
    if "acl" in query:
        if method == "GET":
            return "GetObjectAcl"
        if method == "PUT":
            return "PutObjectAcl"
        raise S3Error("MethodNotAllowed")
    if method == "GET":
        if "attributes" in query:
            return "GetObjectAttributes"
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "uploadId" in query or "partNumber" in query:
            if "uploadId" not in query or "partNumber" not in query:
                raise S3Error("InvalidRequest",
                              "UploadPart needs both partNumber and uploadId.")
            if "x-amz-copy-source" in headers:
                return "UploadPartCopy"
            return "UploadPart"
        if "x-amz-copy-source" in headers:
            return "CopyObject"
        return "PutObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        raise S3Error("NotImplemented", "This POST operation is not implemented.")
    raise S3Error("MethodNotAllowed")
