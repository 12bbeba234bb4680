"""Encryption at rest: the node key, data keys, and the sealed formats of
chunk files, inline objects and access-key secrets.

Owns the cryptography and nothing else: which rows and files hold sealed
bytes is decided by ``chunks``, ``meta`` and ``atrest``; this module never
opens a file or a database.

The model (docs/security.md):

- The **node key** (``Z4_ENCRYPTION_KEY``, 32 bytes) never encrypts data.
  It wraps **data keys** with AES key wrap (RFC 3394), which is
  deterministic and takes no nonce, so no nonce can repeat however many
  keys it wraps. Every wrapped key starts with the 8-byte **key id** of
  the node key that wrapped it, so during a rotation both keys can be in
  use and each wrapped key says which one opens it.
- Every chunk file, inline object and secret is sealed with AES-256-GCM
  under a **data key of its own**, drawn at random and used for exactly
  one encryption; its 96-bit nonce is random too, and since the key is
  never used twice no (key, nonce) pair ever repeats.
- Rotating the node key rewraps the 40-byte wrapped data keys; no sealed
  byte of data is rewritten.

Everything sealed starts with a format byte so that a later format can be
told apart from this one.
"""

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap,
                                                    aes_key_wrap)

KEY_BYTES = 32
KEY_ID_BYTES = 8
# AES key wrap adds one 8-byte block to the 32-byte key it wraps.
WRAPPED_BYTES = KEY_ID_BYTES + KEY_BYTES + 8
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT_V1 = 1
# What sealing adds to an inline object: format, wrapped key, nonce, tag.
INLINE_OVERHEAD = 1 + WRAPPED_BYTES + NONCE_BYTES + TAG_BYTES
# What sealing adds to a chunk file: format, nonce, tag (its data key is
# kept in the metadata store, see ChunkStore).
CHUNK_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES
_SECRET_PREFIX = "z4e1:"

# Associated data binds each sealed thing to what it is, so a sealed chunk
# cannot be passed off as another chunk, an inline object or a secret.
_CHUNK_AAD = b"z4node chunk "
_INLINE_AAD = b"z4node inline object"
_SECRET_AAD = b"z4node access key secret "


class EncryptionKeyError(Exception):
    """A node key that cannot be used; the message says why."""


class KeyUnavailable(Exception):
    """Sealed under a node key this node does not hold."""


class Tampered(Exception):
    """Sealed bytes that fail authentication: changed, truncated or swapped."""


def parse_node_key(text, name="Z4_ENCRYPTION_KEY"):
    """The 32 bytes of a node key written as 64 hex digits or as base64."""
    text = (text or "").strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = None
    if key is not None and len(key) == KEY_BYTES:
        return key
    raise EncryptionKeyError(
        f"{name} must be {KEY_BYTES} random bytes written as {2 * KEY_BYTES} hex "
        f"digits or as base64 (44 characters); it has {len(text)} characters that "
        "are neither (make one with: openssl rand -hex 32)")


def key_id(key):
    """An 8-byte name for a node key; says nothing usable about the key."""
    return hmac.new(key, b"z4node node key id", hashlib.sha256).digest()[:KEY_ID_BYTES]


def new_key():
    return os.urandom(KEY_BYTES)


def seal(data_key, plaintext, aad):
    """``nonce || ciphertext || tag`` under a data key used only for this."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key, blob, aad):
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise Tampered("sealed data is truncated")
    try:
        return AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise Tampered("sealed data failed authentication") from None


class KeyRing:
    """The node keys a node holds: the current one, which wraps every new
    data key, and during a rotation the other one, which only unwraps."""

    def __init__(self, current, *others):
        self._keys = {}
        for key in (current, *others):
            self._keys[key_id(key)] = key
        self.current_id = key_id(current)

    def use(self, key):
        """Wrap with ``key`` from now on (unwrap with every key held)."""
        self._keys[key_id(key)] = key
        self.current_id = key_id(key)

    def forget_others(self):
        self._keys = {self.current_id: self._keys[self.current_id]}

    def key(self, kid):
        return self._keys.get(kid)

    def wrap(self, data_key):
        return self.current_id + aes_key_wrap(self._keys[self.current_id], data_key)

    def unwrap(self, wrapped):
        if len(wrapped) != WRAPPED_BYTES:
            raise Tampered("wrapped key has the wrong length")
        key = self._keys.get(wrapped[:KEY_ID_BYTES])
        if key is None:
            raise KeyUnavailable(
                f"wrapped by node key {wrapped[:KEY_ID_BYTES].hex()}, which this node "
                "does not hold")
        try:
            return aes_key_unwrap(key, wrapped[KEY_ID_BYTES:])
        except InvalidUnwrap:
            raise Tampered("wrapped key failed authentication") from None

    def is_current(self, wrapped):
        return wrapped[:KEY_ID_BYTES] == self.current_id

    def rewrap(self, wrapped):
        """``wrapped`` under the current key; itself if already so."""
        if self.is_current(wrapped):
            return wrapped
        return self.wrap(self.unwrap(wrapped))


class AtRest:
    """How one encrypted data dir seals what it stores (see module doc)."""

    encrypted = True

    def __init__(self, keyring):
        self.keyring = keyring

    # -- chunk files: sealed bytes in the file, wrapped data key in meta ---

    @staticmethod
    def seal_chunk(digest, data):
        """(file bytes, data key) for a chunk named ``digest``: format byte,
        nonce, ciphertext and tag, sealed straight into one buffer (a 4 MiB
        chunk is not copied again to prepend its header)."""
        data_key = new_key()
        nonce = os.urandom(NONCE_BYTES)
        cipher = AESGCM(data_key)
        if not hasattr(cipher, "encrypt_into"):  # cryptography before encrypt_into
            return bytes([FORMAT_V1]) + nonce + cipher.encrypt(
                nonce, data, _CHUNK_AAD + digest), data_key
        out = bytearray(CHUNK_OVERHEAD + len(data))
        out[0] = FORMAT_V1
        out[1:1 + NONCE_BYTES] = nonce
        cipher.encrypt_into(nonce, data, _CHUNK_AAD + digest,
                            memoryview(out)[1 + NONCE_BYTES:])
        return out, data_key

    def open_chunk(self, digest, stored, wrapped_key):
        if not stored or stored[0] != FORMAT_V1:
            raise Tampered("chunk file has an unknown format")
        data_key = self.keyring.unwrap(wrapped_key)
        return open_sealed(data_key, memoryview(stored)[1:], _CHUNK_AAD + digest)

    # -- inline objects: the wrapped key travels with the sealed bytes -----

    def seal_inline(self, data):
        data_key = new_key()
        return (bytes([FORMAT_V1]) + self.keyring.wrap(data_key)
                + seal(data_key, data, _INLINE_AAD))

    def open_inline(self, blob):
        if len(blob) < INLINE_OVERHEAD or blob[0] != FORMAT_V1:
            raise Tampered("inline object has an unknown format or is truncated")
        data_key = self.keyring.unwrap(blob[1:1 + WRAPPED_BYTES])
        return open_sealed(data_key, blob[1 + WRAPPED_BYTES:], _INLINE_AAD)

    def rewrap_inline(self, blob):
        """The blob with its data key wrapped by the current node key (the
        sealed bytes are kept as they are); None if it already is."""
        wrapped = blob[1:1 + WRAPPED_BYTES]
        if self.keyring.is_current(wrapped):
            return None
        return blob[:1] + self.keyring.rewrap(wrapped) + blob[1 + WRAPPED_BYTES:]

    # -- access-key secrets: text in a TEXT column -------------------------

    def seal_secret(self, access_key_id, secret):
        data_key = new_key()
        sealed = self.keyring.wrap(data_key) + seal(
            data_key, secret.encode("utf-8"), _SECRET_AAD + access_key_id.encode("utf-8"))
        return _SECRET_PREFIX + base64.b64encode(sealed).decode("ascii")

    @staticmethod
    def _secret_bytes(text):
        if not text.startswith(_SECRET_PREFIX):
            raise Tampered("secret is not sealed")
        try:
            return base64.b64decode(text[len(_SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise Tampered("sealed secret is not base64") from None

    def open_secret(self, access_key_id, text):
        raw = self._secret_bytes(text)
        data_key = self.keyring.unwrap(raw[:WRAPPED_BYTES])
        return open_sealed(data_key, raw[WRAPPED_BYTES:],
                           _SECRET_AAD + access_key_id.encode("utf-8")).decode("utf-8")

    def rewrap_secret(self, text):
        """The sealed secret rewrapped under the current key; None if it is."""
        raw = self._secret_bytes(text)
        if self.keyring.is_current(raw[:WRAPPED_BYTES]):
            return None
        raw = self.keyring.rewrap(raw[:WRAPPED_BYTES]) + raw[WRAPPED_BYTES:]
        return _SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


class Plaintext:
    """A data dir created without a node key: everything stored as given."""

    encrypted = False
    keyring = None

    @staticmethod
    def seal_inline(data):
        return data

    @staticmethod
    def open_inline(blob):
        return blob

    @staticmethod
    def seal_secret(access_key_id, secret):
        return secret

    @staticmethod
    def open_secret(access_key_id, text):
        if text.startswith(_SECRET_PREFIX):
            raise KeyUnavailable("the secret is sealed but this data dir has no node key")
        return text


PLAINTEXT = Plaintext()
