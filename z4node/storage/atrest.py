"""Which node key opens a data dir, decided once at start-up.

A data dir is encrypted or not from its first start for the rest of its
life, and remembers which (``node_settings.encryption``): started with
``Z4_ENCRYPTION_KEY`` it records the key's id, started without it records
that it is plaintext. Later starts must agree:

- an encrypted data dir refuses to start without its key or with another
  key (during a rotation, either the old or the new key opens it);
- a plaintext data dir refuses to start with a key. Encrypting it in place
  would leave every byte written before in plaintext until rewritten, and
  "encrypted" would stop meaning "nothing readable on disk"; the way to
  encrypt existing data is a new node with a key and a copy of the objects
  (docs/security.md).

Data dirs made before encryption existed have a node id but no
``encryption`` setting: they are plaintext.
"""

import json

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from z4node.storage.crypto import (PLAINTEXT, AtRest, EncryptionKeyError, KeyRing,
                                   key_id, parse_node_key)

ENCRYPTION_SETTING = "encryption"
ROTATION_SETTING = "encryption_rotation"
KEY_ENV = "Z4_ENCRYPTION_KEY"


class EncryptionRefused(Exception):
    """The data dir and the node key given do not go together; says why."""


async def open_encryption(meta, environ, data_dir, first_start):
    """The AtRest (or PLAINTEXT) for this data dir and ``environ``'s key.

    ``first_start`` says the data dir has never been opened (no node id
    yet); only then is its encryption chosen. Raises EncryptionRefused or
    EncryptionKeyError with a message for the operator.
    """
    text = environ.get(KEY_ENV)
    key = parse_node_key(text) if text else None
    setting = await meta.get_setting(ENCRYPTION_SETTING)
    if setting is None:
        if key is not None and not first_start:
            raise EncryptionRefused(_plaintext_dir(data_dir))
        chosen = json.dumps({"key_id": key_id(key).hex() if key is not None else None})
        setting = await meta.set_setting_if_absent(ENCRYPTION_SETTING, chosen)
    state = json.loads(setting)
    if state["key_id"] is None:
        if key is not None:
            raise EncryptionRefused(_plaintext_dir(data_dir))
        return PLAINTEXT
    if key is None:
        raise EncryptionRefused(
            f"data dir {data_dir} is encrypted (node key id {state['key_id']}): "
            f"set {KEY_ENV} to its key")
    given = key_id(key).hex()
    rotation = await meta.get_setting(ROTATION_SETTING)
    if rotation is not None:
        rotation = json.loads(rotation)
        try:
            if given == state["key_id"]:
                other = aes_key_unwrap(key, bytes.fromhex(rotation["new_key"]))
                return AtRest(KeyRing(other, key))
            if given == rotation["to"]:
                other = aes_key_unwrap(key, bytes.fromhex(rotation["old_key"]))
                return AtRest(KeyRing(key, other))
        except InvalidUnwrap:
            raise EncryptionRefused(
                f"the rotation record of data dir {data_dir} is damaged: the "
                "key it names does not open it") from None
        raise EncryptionRefused(
            f"{KEY_ENV} is node key {given}, but data dir {data_dir} is being "
            f"rotated from key {state['key_id']} to key {rotation['to']}: start it "
            "with either of those")
    if given != state["key_id"]:
        hint = ""
        if state.get("previous_key_id") == given:
            hint = (" (that key was rotated out; start the node with the key "
                    "`z4 encryption rotate` was given)")
        raise EncryptionRefused(
            f"{KEY_ENV} is node key {given}, but data dir {data_dir} is encrypted "
            f"with node key {state['key_id']}{hint}")
    return AtRest(KeyRing(key))


def use_at_rest(at_rest, meta, chunks):
    """Make the metadata and chunk stores seal with ``at_rest`` (if the data
    dir is encrypted). Call before anything is read from them."""
    if at_rest.encrypted:
        meta.use_encryption(at_rest)
        chunks.encrypt_with(at_rest, meta.chunk_keys())


def _plaintext_dir(data_dir):
    return (f"data dir {data_dir} was created without {KEY_ENV} and stays "
            "unencrypted: z4node does not encrypt a data dir in place. Start the "
            f"node without {KEY_ENV}, or start a new node with it on an empty data "
            "dir and copy the objects over (docs/security.md, \"Turning encryption "
            "on\")")


__all__ = ["EncryptionKeyError", "EncryptionRefused", "open_encryption", "use_at_rest",
           "ENCRYPTION_SETTING", "ROTATION_SETTING", "KEY_ENV"]
