"""The built-in key manager behind SSE-KMS: the KMS master key and the
named KMS keys it wraps.

The **KMS master key** (32 bytes, from ``Z4_KMS_MASTER_KEY`` or
``--kms-master-key-file``) is the same on every node of a cluster, unlike
the node key, which seals one node's data dir. It never leaves memory and
is never stored; what is stored is each named **KMS key**'s material
wrapped (AES key wrap) under a key derived from the master key and the KMS
key's id, in the ``kms_keys`` system table, which replicates to every node
(``objects.system``). So any node can open any KMS key, and a copy of the
metadata without the master key opens none.

An SSE-KMS object gets its own random data key, wrapped by its KMS key
(``objects.encryption`` keeps that record in the version's metadata); the
KMS key's material never seals data itself.

Rotating the master key rewraps the KMS keys' material, nothing else:
each node runs with the new key in ``Z4_KMS_MASTER_KEY`` and the old one in
``Z4_KMS_PREVIOUS_MASTER_KEY``, which opens what is still wrapped by it;
``z4 kms rewrap`` then wraps every such KMS key under the new master key
(a replicated change). Objects are untouched: their data keys are wrapped
by the KMS keys, whose material stays the same.

Keys are named as AWS names them: a request may give the key id (a UUID),
its ARN, ``alias/NAME`` or the alias ARN; responses give the key's ARN.
"""

import os
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from z4node.objects.encryption import KmsRequest
from z4node.objects.errors import ObjectError
from z4node.objects.system import AdminError
from z4node.storage.crypto import KEY_BYTES, key_id, parse_node_key

MASTER_KEY_ENV = "Z4_KMS_MASTER_KEY"
PREVIOUS_MASTER_KEY_ENV = "Z4_KMS_PREVIOUS_MASTER_KEY"
# The account and region in the ARNs the node gives its keys; clients only
# echo them back.
ACCOUNT = "000000000000"
REGION = "us-east-1"
ARN_PREFIX = f"arn:aws:kms:{REGION}:{ACCOUNT}:"
# The KMS key an aws:kms write uses when it names none (AWS's alias/aws/s3,
# which S3 creates on first use): made on first use too.
DEFAULT_NAME = "aws-s3"
DEFAULT_ALIAS = "alias/aws/s3"


class KmsUnavailable(Exception):
    """No KMS master key, or one that does not open a stored KMS key."""


def master_key_from(options, environ):
    """The KMS master key from ``--kms-master-key-file`` or the
    environment, or None; EncryptionKeyError for one that is malformed."""
    path = (options or {}).get("kms-master-key-file")
    if path:
        with open(path) as f:
            return parse_node_key(f.read(), name="--kms-master-key-file")
    if environ.get(MASTER_KEY_ENV):
        return parse_node_key(environ[MASTER_KEY_ENV], name=MASTER_KEY_ENV)
    return None


def previous_master_key_from(environ):
    """The master key being rotated away from, or None."""
    if environ.get(PREVIOUS_MASTER_KEY_ENV):
        return parse_node_key(environ[PREVIOUS_MASTER_KEY_ENV], name=PREVIOUS_MASTER_KEY_ENV)
    return None


def _wrapping_key(master, kms_key_id):
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"z4node kms key wrap " + kms_key_id.encode()).derive(master)


def arn(kms_key):
    return ARN_PREFIX + "key/" + kms_key.key_id


class KeyManager:
    """Creates KMS keys and opens them, with the master key it was given
    (None: SSE-KMS is off and every KMS request says so)."""

    def __init__(self, master_key, system, random_bytes=os.urandom,
                 previous_master_key=None):
        self._master = master_key
        self._master_id = key_id(master_key).hex() if master_key else None
        # master key id -> master key: every key that may open a KMS key.
        self._masters = {self._master_id: master_key} if master_key else {}
        if previous_master_key is not None:
            self._masters.setdefault(key_id(previous_master_key).hex(), previous_master_key)
        self._system = system
        self._random_bytes = random_bytes

    @property
    def enabled(self):
        return self._master is not None

    def _require_master(self):
        if self._master is None:
            raise KmsUnavailable(
                f"SSE-KMS is off: this node runs without a KMS master key "
                f"(set {MASTER_KEY_ENV} or --kms-master-key-file)")

    async def create(self, name):
        """Create a named KMS key with fresh key material."""
        self._require_master()
        kms_key_id = str(uuid.UUID(bytes=self._random_bytes(16), version=4))
        material = self._random_bytes(KEY_BYTES)
        wrapped = aes_key_wrap(_wrapping_key(self._master, kms_key_id), material).hex()
        return await self._system.add_kms_key(kms_key_id, name, wrapped, self._master_id)

    def find(self, reference):
        """The live KMS key a request names (id, ARN, alias/NAME, alias
        ARN), or None."""
        reference = reference.strip()
        if reference.endswith(DEFAULT_ALIAS):
            reference = "alias/" + DEFAULT_NAME
        if reference.startswith("arn:aws:kms:"):
            reference = reference.split(":", 5)[-1]
        if reference.startswith("key/"):
            reference = reference[len("key/"):]
        if reference.startswith("alias/"):
            return self._system.kms_key_by_name(reference[len("alias/"):])
        return self._system.kms_key(reference)

    def material(self, kms_key):
        """A KMS key's material, opened with the master key."""
        self._require_master()
        master = self._masters.get(kms_key.master_id)
        if master is None:
            raise KmsUnavailable(
                f"KMS key {kms_key.key_id} is wrapped by KMS master key "
                f"{kms_key.master_id}, not by this node's ({self._master_id})")
        try:
            return aes_key_unwrap(_wrapping_key(master, kms_key.key_id),
                                  bytes.fromhex(kms_key.wrapped))
        except (InvalidUnwrap, ValueError):
            raise KmsUnavailable(f"KMS key {kms_key.key_id}'s stored material is damaged") \
                from None

    async def rewrap(self):
        """Wrap every KMS key this node can open but that is not wrapped by
        the current master key under the current one; their names. Keys
        that no master key of this node opens are left as they are (a
        KmsUnavailable names the first)."""
        self._require_master()
        done = []
        for kms_key in self._system.kms_keys():
            if kms_key.master_id == self._master_id:
                continue
            material = self.material(kms_key)
            wrapped = aes_key_wrap(_wrapping_key(self._master, kms_key.key_id), material)
            await self._system.rewrap_kms_key(kms_key, wrapped.hex(), self._master_id)
            done.append(kms_key.name)
        return done

    def open_key(self, kms_key_id):
        """The material of the KMS key an object was written with, or the
        ObjectError a read is answered with."""
        kms_key = self._system.kms_key(kms_key_id)
        if kms_key is None:
            raise ObjectError("KMS.NotFoundException",
                              f"Key '{ARN_PREFIX}key/{kms_key_id}' does not exist")
        try:
            return self.material(kms_key)
        except KmsUnavailable as e:
            raise ObjectError("InternalError", str(e)) from None

    async def request(self, reference, context=None, bucket_key=False):
        """The KmsRequest of a write naming KMS key ``reference`` (None:
        the default key, made on first use); ObjectError
        KMS.NotFoundException for a key that does not exist, as S3 answers."""
        if self._master is None:
            raise ObjectError("NotImplemented",
                              f"SSE-KMS needs the node to run with a KMS master key "
                              f"({MASTER_KEY_ENV} or --kms-master-key-file).")
        if reference is None or reference.strip() in ("", DEFAULT_ALIAS):
            kms_key = self._system.kms_key_by_name(DEFAULT_NAME)
            if kms_key is None:
                try:
                    kms_key = await self.create(DEFAULT_NAME)
                except AdminError:
                    # Made meanwhile, by a concurrent first use.
                    kms_key = self._system.kms_key_by_name(DEFAULT_NAME)
        else:
            kms_key = self.find(reference)
            if kms_key is None:
                raise ObjectError("KMS.NotFoundException", f"Invalid keyId {reference}")
        return KmsRequest(kms_key.key_id, arn(kms_key), self.open_key(kms_key.key_id),
                          context, bucket_key)

    def summary(self, kms_key):
        return {"name": kms_key.name, "key_id": kms_key.key_id, "arn": arn(kms_key),
                "alias": "alias/" + kms_key.name, "created": kms_key.created,
                "master_key_id": kms_key.master_id,
                "usable": kms_key.master_id in self._masters,
                "needs_rewrap": kms_key.master_id != self._master_id}

