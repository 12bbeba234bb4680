"""Integers read from requests: the one parser every query parameter,
header and XML field that holds a count, a size, an offset or a part number
goes through.

``str.isdigit()`` and ``int()`` are too lenient for input: ``isdigit``
takes ``²`` (which ``int`` then refuses), ``int`` takes ``٣``, ``1_000``,
``+5`` and surrounding whitespace, and both take strings far past Python's
4,300-digit conversion limit (``int`` then raises). A value past its bound
would also overflow SQLite's 64-bit integers further down. Here a number is
ASCII digits only, of bounded length, at most a stated maximum.
"""

import re

from z4node.s3.errors import S3Error

_DIGITS = re.compile(r"[0-9]+")
# Longer than any value under INT64_MAX with generous leading zeros; a
# longer string is refused before any conversion work.
MAX_LENGTH = 32

# S3 reads its integer parameters (max-keys, part numbers, markers, Days)
# as 32-bit ints, and sizes and byte offsets as 64-bit ones; SQLite's
# integers are 64-bit too.
INT32_MAX = 2 ** 31 - 1
INT64_MAX = 2 ** 63 - 1


def non_negative(text, maximum):
    """The integer ``text`` spells in ASCII digits, or None if it is not
    one (empty, a sign, a space, any other character, too long) or is
    greater than ``maximum``."""
    if text is None or len(text) > MAX_LENGTH or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= maximum else None


def parameter(value, name, maximum=INT32_MAX, minimum=0, message=None):
    """Query parameter or header ``name`` as an integer from ``minimum``
    to ``maximum``, or InvalidArgument naming it (with S3's message for
    its integer parameters unless ``message`` is given)."""
    number = non_negative(value, maximum)
    if number is None or number < minimum:
        raise S3Error("InvalidArgument",
                      message or f"Provided {name} not an integer or within integer range",
                      extra={"ArgumentName": name, "ArgumentValue": value})
    return number
