"""The S3 access log (``--access-log PATH``): one JSON object per line
per S3 request, written when the request is over.

Owns the line's fields and the file. A line carries the request id, the
client address, the access key id that signed the request (never a
secret), the method, the resource (``/bucket/key``, never the query
string, which can hold a presigned URL's signature), the S3 operation, the
status, the body bytes received and sent, and the duration in seconds.
``status`` is null for a client that went away before its answer.

Lines are buffered and written out every ``flush_seconds`` (and on stop):
a write per request cost more than the metrics did, and a crash loses at
most that last second. :meth:`AccessLog.reopen` (SIGHUP) starts a new
file after logrotate moved the old one.
"""

import datetime
from json.encoder import encode_basestring_ascii

from twisted.logger import Logger

from z4node.periodic import PeriodicJob


class AccessLog:
    log = Logger()

    flush_seconds = 1.0

    def __init__(self, path, clock):
        self.path = path
        self._clock = clock
        self._file = self._open()
        self.failures = 0
        self._second = None
        self._second_text = None
        self._flusher = PeriodicJob("access log flush", clock, self.flush)

    def _open(self):
        return open(self.path, "a", encoding="utf-8")

    def start(self):
        self._flusher.start(self.flush_seconds)

    def flush(self):
        try:
            self._file.flush()
        except OSError as e:
            self._lost(e)

    def reopen(self):
        self.flush()
        try:
            new = self._open()
        except OSError as e:
            self.log.error("access log {path} not reopened, still writing the old "
                           "file: {error}", path=self.path, error=e)
            return
        old, self._file = self._file, new
        old.close()

    def close(self):
        self._flusher.stop()
        self.flush()
        self._file.close()

    def _lost(self, error):
        # A full disk must not fail requests; the node log says so, once
        # per hundred failed writes.
        if self.failures % 100 == 0:
            self.log.error("access log {path}: {error}", path=self.path, error=error)
        self.failures += 1

    def _timestamp(self):
        """ISO 8601 UTC to the millisecond; the formatted second is kept
        (formatting a datetime cost a quarter of a line)."""
        now = self._clock.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.datetime.fromtimestamp(
                second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def answered(self, request, call, request_id, status, bytes_in, bytes_out, seconds):
        """One line for a request that is over (an ``S3Api.answered`` hook)."""
        if call is None:
            key_id = resource = operation = None
        else:
            key_id = call.credentials.access_key_id if call.credentials is not None else None
            resource, operation = call.resource, call.operation
        # Formatted here rather than by json.dumps, which took half the
        # line's cost: every string goes through the JSON string encoder,
        # every number is an int or a float.
        line = (f'{{"time": "{self._timestamp()}", "request_id": {_string(request_id)}, '
                f'"remote": {_string(getattr(request.getClientAddress(), "host", None))}, '
                f'"key_id": {_string(key_id)}, '
                f'"method": {_string(request.method.decode("latin-1"))}, '
                f'"resource": {_string(resource)}, "operation": {_string(operation)}, '
                f'"status": {"null" if status is None else int(status)}, '
                f'"bytes_in": {int(bytes_in)}, "bytes_out": {int(bytes_out)}, '
                f'"duration": {round(seconds, 6)!r}}}\n')
        try:
            self._file.write(line)
        except OSError as e:
            self._lost(e)


def _string(value):
    """A JSON string (ASCII, escaped) or null."""
    return "null" if value is None else encode_basestring_ascii(value)
