"""Server-side encryption in S3 requests and responses: reading the
``x-amz-server-side-encryption*`` headers and writing them back.

What the node does with them lives elsewhere: SSE-S3 is the node's
encryption at rest (``storage.crypto``), there whenever the node runs with
a node key; SSE-C is ``objects.encryption``. This module only turns headers
into a :class:`CustomerKey` or an S3 error, with AWS's codes and messages:

- SSE-C over plain HTTP is refused (InvalidRequest), as S3 does: a key
  sent in the clear must be treated as leaked. Behind a TLS-terminating
  proxy, name it with ``--trusted-proxy`` (``S3Call.secure``).
- SSE-S3 (``AES256``) without a node key is NotImplemented: the node
  cannot keep the promise, and says so instead of storing plaintext.
- SSE-KMS (``aws:kms``, ``aws:kms:dsse``) is NotImplemented.
"""

import base64
import binascii
import hashlib

from z4node.objects import encryption
from z4node.objects.encryption import CustomerKey
from z4node.s3 import sigv4
from z4node.s3.errors import S3Error

SSE = "x-amz-server-side-encryption"
CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"
AES256 = "AES256"
KMS = ("aws:kms", "aws:kms:dsse")

NO_NODE_KEY = ("Server-side encryption (SSE-S3) needs the node to run with "
               "Z4_ENCRYPTION_KEY; this node stores objects unencrypted.")
NO_KMS = "SSE-KMS is not implemented: use AES256 (SSE-S3) or SSE-C."


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
    if value in KMS:
        raise S3Error("NotImplemented", NO_KMS)
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


def check_read(call):
    """GET and HEAD take SSE-C headers, never the SSE-S3 one."""
    if call.headers.get(SSE) is not None:
        raise S3Error("InvalidArgument",
                      "x-amz-server-side-encryption header is not supported for this "
                      "operation.", extra={"ArgumentName": SSE,
                                            "ArgumentValue": call.headers[SSE]})
    return customer_key(call)


def response_headers(api, meta):
    """The encryption headers S3 returns for an object (or upload) whose
    metadata is ``meta``."""
    record = encryption.record_of(meta)
    if record is not None:
        return {CUSTOMER + "algorithm": AES256, CUSTOMER + "key-MD5": record["key_md5"]}
    if api.objects.encrypts_at_rest:
        # Every object of an encrypted node is SSE-S3, asked for or not,
        # and S3 (since 2023) reports SSE-S3 on every object it applies to.
        return {SSE: AES256}
    return {}


def key_response_headers(api, key):
    """The encryption headers of a write that used ``key`` (or None)."""
    if key is not None:
        return {CUSTOMER + "algorithm": AES256, CUSTOMER + "key-MD5": key.key_md5}
    return response_headers(api, {})
