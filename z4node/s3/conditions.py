"""Conditional requests and byte ranges, as S3 evaluates them.

Reads (GET/HEAD): a failed If-Match is 412, and so is a failed
If-Unmodified-Since when If-Match is absent; a matching If-None-Match is
304, and so is an unmet If-Modified-Since when If-None-Match is absent.
CopyObject's ``x-amz-copy-source-if-*`` use the same rules but every
failure is 412. Conditional writes (PutObject, CompleteMultipartUpload)
and deletes (DeleteObject, DeleteObjects) get a check that runs inside
their transaction.
"""

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from z4node.s3 import integers
from z4node.s3.errors import S3Error


def quoted(etag):
    return f'"{etag}"'


def _etags(header):
    return {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}


def _etag_matches(header, etag):
    tags = _etags(header)
    return "*" in tags or etag in tags


def _parse_date(value):
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _parse_iso8601(value):
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def evaluate(headers, version, prefix=""):
    """None if the request may proceed, else 304 or 412 (the status S3
    answers). ``prefix`` is ``x-amz-copy-source-`` for CopyObject."""
    etag = version.etag
    # HTTP dates have whole seconds; so must the comparison.
    modified = int(version.last_modified)
    if_match = headers.get(prefix + "if-match")
    if_unmodified = headers.get(prefix + "if-unmodified-since")
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            return 412
    elif if_unmodified is not None:
        when = _parse_date(if_unmodified)
        if when is not None and modified > when:
            return 412
    if_none_match = headers.get(prefix + "if-none-match")
    if_modified = headers.get(prefix + "if-modified-since")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            return 304
    elif if_modified is not None:
        when = _parse_date(if_modified)
        if when is not None and modified <= when:
            return 304
    return None


def write_precondition(headers):
    """The check a conditional write (PutObject, CompleteMultipartUpload)
    asks for, as ``check(current_version_or_None)``, or None.

    It runs inside the write's transaction, so of several writers racing
    with ``If-None-Match: *`` exactly one creates the object and the others
    get 412. S3 supports only ``*`` for If-None-Match on writes.
    """
    if_none_match = headers.get("if-none-match")
    if_match = headers.get("if-match")
    if if_none_match is None and if_match is None:
        return None
    if if_none_match is not None and if_none_match.strip() != "*":
        raise S3Error("NotImplemented",
                      "If-None-Match on a write supports only the value *.")

    def check(current):
        if if_none_match is not None and current is not None:
            raise S3Error("PreconditionFailed", extra={"Condition": "If-None-Match"})
        if if_match is not None:
            if current is None:
                raise S3Error("NoSuchKey")
            if not _etag_matches(if_match, current.etag):
                raise S3Error("PreconditionFailed", extra={"Condition": "If-Match"})
    return check


def delete_precondition(if_match=None, last_modified=None, size=None):
    """The check a conditional delete asks for, as ``check(version)`` run
    on the version it would delete (None: there is none, or it is a
    delete marker), or None when it asks for nothing.

    ``if_match`` is an If-Match value (an ETag list or ``*``),
    ``last_modified`` an HTTP date and ``size`` a byte count, each as sent
    (the x-amz-if-match-last-modified-time and x-amz-if-match-size headers,
    or the ETag, LastModifiedTime and Size of a DeleteObjects entry). As on
    S3: a mismatch is 412 PreconditionFailed; If-Match on a key that is
    not there is 404 NoSuchKey, while a time or size alone lets the
    delete go ahead.
    """
    if if_match is None and last_modified is None and size is None:
        return None
    when = None
    if last_modified is not None:
        # A header carries an HTTP date, a DeleteObjects entry ISO 8601.
        when = _parse_date(last_modified)
        if when is None:
            when = _parse_iso8601(last_modified)
        if when is None:
            raise S3Error("InvalidArgument", "Invalid x-amz-if-match-last-modified-time",
                          extra={"ArgumentName": "x-amz-if-match-last-modified-time",
                                 "ArgumentValue": last_modified})
    wanted_size = None
    if size is not None:
        wanted_size = integers.non_negative(size.strip(), integers.INT64_MAX)
        if wanted_size is None:
            raise S3Error("InvalidArgument", "Invalid x-amz-if-match-size",
                          extra={"ArgumentName": "x-amz-if-match-size", "ArgumentValue": size})

    def check(version):
        if version is None or version.delete_marker:
            if if_match is not None:
                raise S3Error("NoSuchKey")
            return
        if if_match is not None and not _etag_matches(if_match, version.etag):
            raise S3Error("PreconditionFailed", extra={"Condition": "If-Match"})
        # HTTP dates have whole seconds; so must the comparison.
        if when is not None and int(version.last_modified) != int(when):
            raise S3Error("PreconditionFailed",
                          extra={"Condition": "x-amz-if-match-last-modified-time"})
        if wanted_size is not None and version.size != wanted_size:
            raise S3Error("PreconditionFailed", extra={"Condition": "x-amz-if-match-size"})
    return check


def parse_range(header, size):
    """``(start, end)`` inclusive for a Range header, or None for the whole
    object. A header that is not one well-formed byte range is ignored, as
    HTTP says; a range that starts past the end is InvalidRange (416)."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    start = integers.non_negative(first, integers.INT64_MAX)
    end = integers.non_negative(last, integers.INT64_MAX)
    # Each end is absent or a number, and one of them is there.
    if not dash or not (first or last) or (first and start is None) \
            or (last and end is None):
        return None
    if start is None:
        if end == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(size - end, 0), size - 1
    if end is not None and end < start:
        return None
    if start >= size:
        raise _unsatisfiable(header, size)
    return start, size - 1 if end is None else min(end, size - 1)


# ASCII digits only (``\d`` would take any script's digits).
_COPY_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]+)")


def parse_copy_range(spec, size):
    """``(start, end)`` inclusive for UploadPartCopy's
    x-amz-copy-source-range. Unlike a GET's Range it must name both ends,
    and a range past the source's end is refused rather than cut short:
    the part would silently be shorter than the client asked."""
    match = _COPY_RANGE.fullmatch(spec.strip())
    if match is None:
        raise S3Error("InvalidArgument",
                      "The x-amz-copy-source-range value must be of the form bytes=first-last "
                      "where first and last are the zero-based offsets of the first and last "
                      "bytes to copy",
                      extra={"ArgumentName": "x-amz-copy-source-range", "ArgumentValue": spec})
    start = integers.non_negative(match.group(1), integers.INT64_MAX)
    end = integers.non_negative(match.group(2), integers.INT64_MAX)
    if start is None or end is None or start > end:
        raise S3Error("InvalidArgument",
                      f"Range specified is not valid for source object of size: {size}",
                      extra={"ArgumentName": "x-amz-copy-source-range", "ArgumentValue": spec})
    if end >= size:
        # Well formed but past the source's end: unsatisfiable, as S3 says.
        raise S3Error("InvalidRange", headers={"content-range": f"bytes */{size}"},
                      extra={"RangeRequested": spec, "ActualObjectSize": str(size)})
    return start, end


def _unsatisfiable(header, size):
    return S3Error("InvalidRange", headers={"content-range": f"bytes */{size}"},
                   extra={"RangeRequested": header, "ActualObjectSize": str(size)})
