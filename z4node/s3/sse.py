"""Server-side encryption in S3 requests and responses: reading the
``x-amz-server-side-encryption*`` headers and writing them back.

What the node does with them lives elsewhere: SSE-S3 is the node's
encryption at rest (``storage.crypto``), there whenever the node runs with
a node key; SSE-C and SSE-KMS are ``objects.encryption``, with KMS keys
from ``objects.kms``. This module only turns headers (and a bucket's
default encryption) into a :class:`CustomerKey`, a ``KmsRequest`` or an S3
error, with AWS's codes and messages:

- SSE-C over plain HTTP is refused (InvalidRequest), as S3 does: a key
  sent in the clear must be treated as leaked. Behind a TLS-terminating
  proxy, name it with ``--trusted-proxy`` (``S3Call.secure``).
- SSE-S3 (``AES256``) without a node key is NotImplemented: the node
  cannot keep the promise, and says so instead of storing plaintext.
- SSE-KMS (``aws:kms``) names its KMS key in ``...-aws-kms-key-id`` (or
  takes the bucket default's, or the node's default key), an encryption
  context in ``...-context`` and the bucket-key flag; a key that does not
  exist is 400 KMS.NotFoundException. Dual-layer ``aws:kms:dsse`` is
  NotImplemented.
"""

import base64
import binascii
import hashlib
import json

from z4node.objects import encryption
from z4node.objects.encryption import CustomerKey
from z4node.s3 import sigv4
from z4node.s3.errors import S3Error

SSE = "x-amz-server-side-encryption"
CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"
AES256 = "AES256"
KMS = ("aws:kms", "aws:kms:dsse")
AWS_KMS = "aws:kms"
KMS_KEY_ID = SSE + "-aws-kms-key-id"
KMS_CONTEXT = SSE + "-context"
BUCKET_KEY = SSE + "-bucket-key-enabled"

NO_NODE_KEY = ("Server-side encryption (SSE-S3) needs the node to run with "
               "Z4_ENCRYPTION_KEY; this node stores objects unencrypted.")
NO_DSSE = "Dual-layer SSE-KMS (aws:kms:dsse) is not implemented: use aws:kms."


def sse_s3_requested(api, call):
    """Whether a write asks for SSE-S3; S3Error for what cannot be done."""
    value = call.headers.get(SSE)
    if value is None:
        return False
    value = value.strip()
    if value == AES256:
        if not api.objects.encrypts_at_rest:
            raise S3Error("NotImplemented", NO_NODE_KEY)
        return True
    if value == AWS_KMS:
        return False
    if value in KMS:
        raise S3Error("NotImplemented", NO_DSSE)
    raise S3Error("InvalidArgument", "The encryption method specified is not supported",
                  extra={"ArgumentName": SSE, "ArgumentValue": value})


def customer_key(call, prefix=CUSTOMER):
    """The SSE-C key a request carries under ``prefix``, or None."""
    headers = call.headers
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    key_md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and key_md5 is None:
        return None
    if not call.secure:
        raise S3Error("InvalidRequest",
                      "Requests specifying Server Side Encryption with Customer "
                      "provided keys must be made over a secure connection.")
    if algorithm is None:
        raise S3Error("InvalidArgument",
                      "Requests specifying Server Side Encryption with Customer "
                      "provided keys must provide a valid encryption algorithm.",
                      extra={"ArgumentName": prefix + "algorithm"})
    if algorithm.strip() != AES256:
        raise S3Error("InvalidEncryptionAlgorithmError",
                      extra={"ArgumentName": prefix + "algorithm",
                             "ArgumentValue": algorithm})
    if key is None:
        raise S3Error("InvalidArgument",
                      "Requests specifying Server Side Encryption with Customer "
                      "provided keys must provide an appropriate secret key.",
                      extra={"ArgumentName": prefix + "key"})
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise S3Error("InvalidArgument",
                      "The secret key was invalid for the specified algorithm.",
                      extra={"ArgumentName": prefix + "key"})
    expected = base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")
    if key_md5 is None:
        raise S3Error("InvalidArgument",
                      "Requests specifying Server Side Encryption with Customer "
                      "provided keys must provide the client calculated MD5 of the "
                      "secret key.", extra={"ArgumentName": prefix + "key-MD5"})
    if not sigv4.same_signature(expected, key_md5.strip()):
        raise S3Error("InvalidArgument",
                      "The calculated MD5 hash of the key did not match the hash "
                      "that was provided.", extra={"ArgumentName": prefix + "key-MD5"})
    return CustomerKey(raw, expected)


def write_encryption(api, call):
    """The SSE-C key a write (PUT, COPY destination, multipart create) asks
    for, or None for the node's own encryption; S3Error for the rest."""
    key = customer_key(call)
    if key is not None and SSE in call.headers:
        raise S3Error("InvalidArgument",
                      "Server Side Encryption with Customer provided key is "
                      "incompatible with the encryption method specified",
                      extra={"ArgumentName": SSE, "ArgumentValue": call.headers[SSE]})
    sse_s3_requested(api, call)
    return key


async def kms_request(api, call, bucket_name=None):
    """The KmsRequest a write asks for -- in its headers, or by its
    bucket's default encryption when it names no encryption -- or None."""
    headers = call.headers
    value = (headers.get(SSE) or "").strip()
    if value != AWS_KMS:
        for name in (KMS_KEY_ID, KMS_CONTEXT):
            if name in headers:
                raise S3Error("InvalidArgument",
                              "Server Side Encryption with AWS KMS managed key requires "
                              f"HTTP header {SSE} : aws:kms",
                              extra={"ArgumentName": name, "ArgumentValue": headers[name]})
        if value or customer_key_headers(call):
            return None
        default = api.objects.bucket(bucket_name or call.bucket).settings.get("encryption")
        if not default or default.get("algorithm") != AWS_KMS:
            return None
        return await api.objects.kms_request(default.get("key_id"), None,
                                             bool(default.get("bucket_key")))
    context = headers.get(KMS_CONTEXT)
    if context is not None:
        context = context.strip()
        try:
            parsed = json.loads(base64.b64decode(context, validate=True))
        except (binascii.Error, ValueError):
            parsed = None
        if not isinstance(parsed, dict) or not all(
                isinstance(v, str) for v in parsed.values()):
            raise S3Error("InvalidArgument",
                          "The header 'x-amz-server-side-encryption-context' shall be "
                          "Base64-encoded UTF-8 string holding JSON which represents a "
                          "string-string map", extra={"ArgumentName": KMS_CONTEXT})
    bucket_key = (headers.get(BUCKET_KEY) or "").strip().lower() == "true"
    return await api.objects.kms_request(headers.get(KMS_KEY_ID), context, bucket_key)


def customer_key_headers(call, prefix=CUSTOMER):
    """Whether a request carries any SSE-C header under ``prefix``."""
    return any(prefix + name in call.headers for name in ("algorithm", "key", "key-md5"))


def customer_key_only(call):
    """The SSE-C key of a request that takes only SSE-C headers: GET and
    HEAD, and UploadPart and UploadPartCopy (their upload's encryption was
    chosen when it was created). x-amz-server-side-encryption or its KMS
    headers there are InvalidArgument, as S3 answers, not ignored."""
    for name in (SSE, KMS_KEY_ID, KMS_CONTEXT):
        if call.headers.get(name) is not None:
            raise S3Error("InvalidArgument",
                          f"{name} header is not supported for this operation.",
                          extra={"ArgumentName": name, "ArgumentValue": call.headers[name]})
    return customer_key(call)


def response_headers(api, meta):
    """The encryption headers S3 returns for an object (or upload) whose
    metadata is ``meta``."""
    record = encryption.record_of(meta)
    if encryption.is_kms(record):
        headers = {SSE: AWS_KMS, KMS_KEY_ID: record["arn"]}
        if record.get("context"):
            headers[KMS_CONTEXT] = record["context"]
        if record.get("bucket_key"):
            headers[BUCKET_KEY] = "true"
        return headers
    if record is not None:
        return {CUSTOMER + "algorithm": AES256, CUSTOMER + "key-MD5": record["key_md5"]}
    if api.objects.encrypts_at_rest:
        # Every object of an encrypted node is SSE-S3, asked for or not,
        # and S3 (since 2023) reports SSE-S3 on every object it applies to.
        return {SSE: AES256}
    return {}

