"""Bucket versioning as S3 defines it, and version ids.

A bucket is in one of three states: never versioned (no ``versioning``
setting), ``Enabled`` or ``Suspended``. Never-versioned and suspended
buckets write the ``null`` version (replacing the previous ``null``
version, keeping every other); enabled buckets give every write a new id.

A version id is opaque to clients but tells us its version's HLC
timestamp, so that finding a version by id is one index seek: 16 bytes,
the timestamp subtracted from 2**64-1 (so ids sort newest first, like the
versions they name) then 8 random bytes (two nodes can issue the same HLC
value), in base32hex without padding: 26 characters of ``0-9A-V``, safe in
URLs and XML as they are.
"""

import base64
import binascii

from z4node.objects.errors import ObjectError

NULL_VERSION = "null"
ENABLED = "Enabled"
SUSPENDED = "Suspended"

_MAX_HLC = (1 << 64) - 1
# HLCs are stored as SQLite's signed 64-bit integers: no id we issued
# carries a larger one.
_LARGEST_STORED_HLC = (1 << 63) - 1
_ID_LENGTH = 26


def status(bucket):
    """``Enabled``, ``Suspended`` or None (never enabled)."""
    return bucket.settings.get("versioning")


def new_version_id(hlc, random_bytes):
    raw = (_MAX_HLC - hlc).to_bytes(8, "big") + random_bytes(8)
    return base64.b32hexencode(raw).decode("ascii").rstrip("=")


def version_hlc(version_id):
    """The HLC timestamp a version id carries; None for ``null``. An id we
    could not have issued is InvalidArgument, as S3 answers."""
    if version_id == NULL_VERSION:
        return None
    if len(version_id) != _ID_LENGTH:
        raise invalid_version_id(version_id)
    try:
        raw = base64.b32hexdecode(version_id + "======")
    except (binascii.Error, ValueError):
        raise invalid_version_id(version_id) from None
    hlc = _MAX_HLC - int.from_bytes(raw[:8], "big")
    if hlc > _LARGEST_STORED_HLC:
        raise invalid_version_id(version_id)
    return hlc


def invalid_version_id(version_id):
    return ObjectError("InvalidArgument", "Invalid version id specified",
                       argument=("versionId", version_id))
