"""Per-object server-side encryption: with customer-provided keys (SSE-C)
and with KMS keys (SSE-KMS).

SSE-S3 needs nothing here: in an encrypted data dir every chunk and inline
object is sealed under the node key by the storage layer
(``z4node.storage.crypto``), which is exactly "encrypted with a key the
server manages".

SSE-C adds a layer only the customer's key opens. Each SSE-C object (or
multipart upload) gets a random **object key**; the version's metadata keeps
it wrapped (AES key wrap) under a key derived from the customer's key with
HKDF and a random salt, plus an HMAC of the customer's key under that salt
to tell a wrong key from a right one. The customer's key itself is never
stored, and nothing stored opens the object without it.

Every chunk (and the inline bytes) of an SSE-C object is sealed with
AES-256-GCM under a subkey derived from the object key and a fresh random
salt, so no key ever seals twice. The sealed bytes are what the chunk store
receives, so an SSE-C chunk is named by the hash of its ciphertext: it
never deduplicates with anything, and its name says nothing about its
plaintext. In an encrypted data dir the chunk store then seals it again
under the node key, so every file on disk has the same form.

SSE-KMS works the same way, except for what wraps the object key: a key
derived (HKDF, random salt, the encryption context as info) from the
material of a named KMS key (``objects.kms``), which the node itself can
open. Its record, under its own metadata key, names the KMS key by id, so
an object keeps opening under the key it was written with.

The ETag of an SSE-C object is an HMAC of its MD5 under the object key,
not the MD5 itself (S3's ETags for SSE-C objects are not MD5s either): an
MD5 of the plaintext would let anyone who can list the bucket confirm a
guess of the content.
"""

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from z4node.objects.errors import ObjectError
from z4node.storage.crypto import KEY_BYTES, Tampered, open_sealed, seal

# The keys of version metadata that hold an SSE-C and an SSE-KMS record.
META_KEY = "sse-c"
KMS_META_KEY = "sse-kms"
RECORD_KEYS = (META_KEY, KMS_META_KEY)
FORMAT_V1 = 1
SALT_BYTES = 16
# What sealing adds to each chunk: format, salt, nonce, tag.
OVERHEAD = 1 + SALT_BYTES + 12 + 16

_AAD = b"z4node sse-c"

NEEDS_KEY = ("The object was stored using a form of Server Side Encryption. The "
             "correct parameters must be provided to retrieve the object.")
NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
WRONG_KEY = ("The customer-provided encryption key does not match the key the object "
             "was stored with.")
PART_NEEDS_KEY = ("The multipart upload initiate requested encryption. Subsequent part "
                  "requests must include the appropriate encryption parameters.")
PART_KEY_DIFFERS = ("The provided encryption parameters did not match the ones used "
                    "originally.")
PART_NOT_ENCRYPTED = ("The multipart upload initiate did not request customer-provided "
                      "encryption; its parts cannot use it.")


@dataclass(frozen=True)
class CustomerKey:
    """A customer's 256-bit key as a request carried it (already checked
    against its MD5 by the S3 layer)."""

    key: bytes
    key_md5: str  # base64 of MD5(key), as S3 reports it back

    def __repr__(self):
        return f"CustomerKey(md5={self.key_md5})"


@dataclass(frozen=True)
class KmsRequest:
    """An SSE-KMS write: the KMS key it names (opened by ``objects.kms``),
    the encryption context (base64 JSON, as the request carried it, or
    None) and whether the bucket-key flag was set (accepted and reported;
    each object still has its own data key)."""

    key_id: str
    arn: str
    material: bytes
    context: str | None = None
    bucket_key: bool = False

    def __repr__(self):
        return f"KmsRequest({self.arn})"


def _hkdf(secret, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                info=info).derive(secret)


class CustomerSealing:
    """An SSE-C or SSE-KMS object's opened object key: seals and opens its
    bytes (the same way for both: only what wraps the key differs)."""

    def __init__(self, object_key):
        self._object_key = object_key

    def seal(self, data):
        """Chunk or inline bytes sealed under a fresh subkey (chunk I/O pool)."""
        salt = os.urandom(SALT_BYTES)
        subkey = _hkdf(self._object_key, salt, b"z4node sse-c data")
        return bytes([FORMAT_V1]) + salt + seal(subkey, data, _AAD)

    def open(self, blob):
        if len(blob) < OVERHEAD or blob[0] != FORMAT_V1:
            raise Tampered("SSE-C data has an unknown format or is truncated")
        view = memoryview(blob)
        subkey = _hkdf(self._object_key, bytes(view[1:1 + SALT_BYTES]), b"z4node sse-c data")
        return open_sealed(subkey, view[1 + SALT_BYTES:], _AAD)

    def etag(self, md5):
        return hmac.new(self._object_key, b"z4node sse-c etag" + md5,
                        hashlib.sha256).hexdigest()[:32]


def new_record(customer_key):
    """(record for the version's metadata, CustomerSealing) for a new
    object; ``customer_key`` is a CustomerKey or a KmsRequest."""
    object_key = os.urandom(KEY_BYTES)
    salt = os.urandom(SALT_BYTES)
    if isinstance(customer_key, KmsRequest):
        kek = _kms_kek(customer_key.material, salt, customer_key.context)
        record = {
            "algorithm": "aws:kms",
            "key_id": customer_key.key_id,
            "arn": customer_key.arn,
            "salt": _b64(salt),
            "wrapped": _b64(aes_key_wrap(kek, object_key)),
            "bucket_key": customer_key.bucket_key,
        }
        if customer_key.context is not None:
            record["context"] = customer_key.context
        return record, CustomerSealing(object_key)
    kek = _hkdf(customer_key.key, salt, b"z4node sse-c key wrap")
    record = {
        "algorithm": "AES256",
        "key_md5": customer_key.key_md5,
        "salt": _b64(salt),
        "hmac": _b64(hmac.new(salt, customer_key.key, hashlib.sha256).digest()),
        "wrapped": _b64(aes_key_wrap(kek, object_key)),
    }
    return record, CustomerSealing(object_key)


def _kms_kek(material, salt, context):
    return _hkdf(material, salt, b"z4node sse-kms key wrap " + (context or "").encode())


def record_of(meta):
    """The object's SSE-C or SSE-KMS record, or None."""
    return meta.get(META_KEY) or meta.get(KMS_META_KEY)


def is_kms(record):
    return record is not None and record.get("algorithm") == "aws:kms"


def with_record(meta, record):
    """``meta`` without any encryption record, plus ``record`` if given."""
    meta = {k: v for k, v in meta.items() if k not in RECORD_KEYS}
    if record is not None:
        meta[KMS_META_KEY if is_kms(record) else META_KEY] = record
    return meta


def open_kms_record(record, open_key):
    """The CustomerSealing of an SSE-KMS record; ``open_key(key_id)`` gives
    the material of the KMS key that wrapped it (or raises ObjectError)."""
    kek = _kms_kek(open_key(record["key_id"]), base64.b64decode(record["salt"]),
                   record.get("context"))
    try:
        return CustomerSealing(aes_key_unwrap(kek, base64.b64decode(record["wrapped"])))
    except InvalidUnwrap:
        raise ObjectError("InternalError",
                          "The object's stored SSE-KMS data key is damaged.") from None


def open_record(record, customer_key, wrong_key=None):
    """The CustomerSealing of a record, if ``customer_key`` is its key;
    otherwise ``wrong_key`` is raised (by default S3's answer to a GET)."""
    salt = base64.b64decode(record["salt"])
    check = hmac.new(salt, customer_key.key, hashlib.sha256).digest()
    if not hmac.compare_digest(check, base64.b64decode(record["hmac"])):
        raise wrong_key or ObjectError("InvalidArgument", WRONG_KEY)
    kek = _hkdf(customer_key.key, salt, b"z4node sse-c key wrap")
    try:
        return CustomerSealing(aes_key_unwrap(kek, base64.b64decode(record["wrapped"])))
    except InvalidUnwrap:
        raise ObjectError("InternalError", "The object's stored SSE-C key is damaged.") from None


def sealing_for(meta, customer_key, open_key):
    """The CustomerSealing to read an object (or None if it is neither
    SSE-C nor SSE-KMS), or the ObjectError S3 answers when the request's
    key does not fit; ``open_key`` as for :func:`open_kms_record`."""
    record = record_of(meta)
    if is_kms(record):
        if customer_key is not None:
            raise ObjectError("InvalidRequest", NOT_APPLICABLE)
        return open_kms_record(record, open_key)
    if record is None:
        if customer_key is not None:
            raise ObjectError("InvalidRequest", NOT_APPLICABLE)
        return None
    if customer_key is None:
        raise ObjectError("InvalidRequest", NEEDS_KEY)
    return open_record(record, customer_key)


def part_sealing(upload_meta, customer_key, open_key):
    """The CustomerSealing for a part of an upload (None if it is neither
    SSE-C nor SSE-KMS); an SSE-KMS upload's parts carry no key."""
    record = record_of(upload_meta)
    if is_kms(record):
        if customer_key is not None:
            raise ObjectError("InvalidRequest", PART_NOT_ENCRYPTED)
        return open_kms_record(record, open_key)
    if record is None:
        if customer_key is not None:
            raise ObjectError("InvalidRequest", PART_NOT_ENCRYPTED)
        return None
    if customer_key is None:
        raise ObjectError("InvalidRequest", PART_NEEDS_KEY)
    return open_record(record, customer_key, ObjectError("InvalidRequest", PART_KEY_DIFFERS))


def _b64(data):
    return base64.b64encode(data).decode("ascii")
