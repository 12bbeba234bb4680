"""The S3 access log (``--access-log PATH``): one JSON object per line
per S3 request, written when the request is over.

Owns the line's fields and the file. A line carries the request id, the
client address, the access key id that signed the request (never a
secret), the method, the resource (``/bucket/key``, never the query
string, which can hold a presigned URL's signature), the S3 operation, the
status, the body bytes received and sent, and the duration in seconds.
``status`` is null for a client that went away before its answer.

The file is line buffered: each request costs one append to the page
cache, and a crash loses no line. :meth:`AccessLog.reopen` (SIGHUP)
starts a new file after logrotate moved the old one.
"""

import datetime
import json

from twisted.logger import Logger


class AccessLog:
    log = Logger()

    def __init__(self, path, clock):
        self.path = path
        self._clock = clock
        self._file = self._open()
        self.failures = 0

    def _open(self):
        return open(self.path, "a", buffering=1, encoding="utf-8")

    def reopen(self):
        old, self._file = self._file, self._open()
        old.close()

    def close(self):
        self._file.close()

    def answered(self, request, call, request_id, status, bytes_in, bytes_out, seconds):
        """One line for a request that is over (an ``S3Api.answered`` hook)."""
        peer = request.getClientAddress()
        line = json.dumps({
            "time": datetime.datetime.fromtimestamp(
                self._clock.seconds(), datetime.timezone.utc).isoformat(
                    timespec="milliseconds"),
            "request_id": request_id,
            "remote": getattr(peer, "host", None),
            "key_id": (call.credentials.access_key_id
                       if call is not None and call.credentials is not None else None),
            "method": request.method.decode("latin-1"),
            "resource": call.resource if call is not None else None,
            "operation": call.operation if call is not None else None,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration": round(seconds, 6),
        })
        try:
            self._file.write(line + "\n")
        except OSError as e:
            # A full disk must not fail requests; the node log says so,
            # once per hundred lost lines.
            if self.failures % 100 == 0:
                self.log.error("access log {path}: {error}", path=self.path, error=e)
            self.failures += 1
