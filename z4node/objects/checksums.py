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
