"""The additional checksums S3 clients send with objects (``x-amz-checksum-*``):
CRC32, CRC32C, CRC64NVME, SHA1 and SHA256, computed incrementally as bytes
stream past.

This module owns the algorithms, their names and their header names; it
knows nothing of where the bytes come from or where the values are stored.
The CRCs other than CRC32 come from ``awscrt``, AWS's own implementation,
so our values are the SDKs' values by construction.
"""

import base64
import hashlib
import zlib

from awscrt import checksums as _crt

from z4node.objects.errors import ObjectError

# In the order AWS lists them; the names are those of x-amz-checksum-algorithm.
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")

_HEADER_PREFIX = "x-amz-checksum-"


class _Crc:
    """A running CRC: ``update(data, previous) -> int`` plus its width."""

    __slots__ = ("_update", "_size", "_value")

    def __init__(self, update, size):
        self._update = update
        self._size = size
        self._value = 0

    def update(self, data):
        self._value = self._update(data, self._value)

    def digest(self):
        return self._value.to_bytes(self._size, "big")

    def b64(self):
        return base64.b64encode(self.digest()).decode("ascii")


class _Hash:
    """A hashlib hash with the same face as :class:`_Crc`."""

    __slots__ = ("_hash",)

    def __init__(self, name):
        self._hash = hashlib.new(name)

    def update(self, data):
        self._hash.update(data)

    def digest(self):
        return self._hash.digest()

    def b64(self):
        return base64.b64encode(self._hash.digest()).decode("ascii")


_FACTORIES = {
    "CRC32": lambda: _Crc(zlib.crc32, 4),
    "CRC32C": lambda: _Crc(_crt.crc32c, 4),
    "CRC64NVME": lambda: _Crc(_crt.crc64nvme, 8),
    "SHA1": lambda: _Hash("sha1"),
    "SHA256": lambda: _Hash("sha256"),
}


def _canonical(algorithm):
    name = algorithm.upper()
    if name not in _FACTORIES:
        raise ObjectError("InvalidRequest",
                      f"Checksum algorithm {algorithm!r} is not supported; "
                      f"use one of {', '.join(ALGORITHMS)}.")
    return name


def new_checksum(algorithm):
    """A fresh running checksum for ``algorithm`` (any case): an object with
    ``update(bytes)``, ``digest() -> bytes`` (big-endian for the CRCs) and
    ``b64() -> str``, the value as S3 sends it in ``x-amz-checksum-*``."""
    return _FACTORIES[_canonical(algorithm)]()


def algorithm_from_header(name):
    """``"x-amz-checksum-crc32c"`` (any case) -> ``"CRC32C"``."""
    lowered = name.lower()
    if not lowered.startswith(_HEADER_PREFIX):
        raise ObjectError("InvalidRequest", f"{name!r} is not a checksum header.")
    return _canonical(lowered[len(_HEADER_PREFIX):])


def header_name(algorithm):
    """``"CRC32C"`` -> ``"x-amz-checksum-crc32c"``."""
    return _HEADER_PREFIX + _canonical(algorithm).lower()


# How a multipart object's checksum is formed, per algorithm (AWS's rules):
# a CRC can be combined into the checksum of the whole object
# (FULL_OBJECT), any algorithm can checksum the parts' checksums
# (COMPOSITE, reported with a "-N" suffix); CRC64NVME is full-object only,
# the SHAs composite only.
CHECKSUM_TYPES = {
    "CRC32": ("COMPOSITE", "FULL_OBJECT"),
    "CRC32C": ("COMPOSITE", "FULL_OBJECT"),
    "CRC64NVME": ("FULL_OBJECT",),
    "SHA1": ("COMPOSITE",),
    "SHA256": ("COMPOSITE",),
}

_COMBINE = {"CRC32": _crt.combine_crc32, "CRC32C": _crt.combine_crc32c,
            "CRC64NVME": _crt.combine_crc64nvme}


def checksum_type(algorithm, requested=None):
    """The multipart checksum type for algorithm: ``requested`` if allowed,
    else AWS's default (the first listed)."""
    allowed = CHECKSUM_TYPES[_canonical(algorithm)]
    if requested is None:
        return allowed[0]
    requested = requested.upper()
    if requested not in allowed:
        raise ObjectError("InvalidRequest",
                          f"The {requested} checksum type cannot be used with "
                          f"the {algorithm} checksum algorithm.")
    return requested


def multipart_checksum(algorithm, kind, parts):
    """The object checksum of a multipart upload from its parts'
    ``[(base64 checksum, size)]`` in order, as S3 reports it."""
    digests = [base64.b64decode(value) for value, _ in parts]
    if kind == "FULL_OBJECT":
        combine = _COMBINE[algorithm]
        width = len(digests[0])
        crc = int.from_bytes(digests[0], "big")
        for digest, (_, size) in zip(digests[1:], parts[1:]):
            crc = combine(crc, int.from_bytes(digest, "big"), size)
        return base64.b64encode(crc.to_bytes(width, "big")).decode("ascii")
    whole = new_checksum(algorithm)
    for digest in digests:
        whole.update(digest)
    return f"{whole.b64()}-{len(parts)}"
