"""HTTP plumbing for S3: a Request that streams its body, and a response
writer that respects the transport's backpressure.

twisted.web's stock ``Request`` buffers the whole body (to a temp file over
100 kB) and only then calls ``render``. An S3 PUT must verify signatures and
hash while the bytes arrive and must keep memory flat, so
:class:`S3Channel` dispatches a request with a body as soon as its headers
are in, and :class:`S3Request` hands the body to the handler piece by piece
through :class:`BodyStream`, pausing the socket while the handler is behind.

``Expect: 100-continue`` is answered only when the handler starts reading
the body, so a request refused on its headers (bad signature, no such
bucket) never makes the client send its body. A response that is finished
before the whole body arrived closes the connection, since the unread rest
of the body cannot be told apart from the next request. The node's own
``/_z4/`` resources get their bodies the same way (never spooled to a temp
file as twisted.web would), so they can refuse a body on its headers too.

The limits that keep one client from pinning the node's memory and
connections live here too (:class:`UploadBudget`, and the options of
:class:`S3Site`): a node-wide budget of body bytes held in memory, a
maximum number of connections, a deadline for a request's headers and a
minimum rate for its body. Requests the channel refuses before any handler
sees them (headers too large, malformed, too slow) get an S3 error
document, then the connection is closed.
"""

import io
from collections import deque

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.web import http, server
from zope.interface import implementer

from z4node.s3 import xml
from z4node.s3.errors import S3Error

MiB = 1024 * 1024


class BodyIncomplete(Exception):
    """The connection was lost before the whole request body arrived."""


def error_document(code, message):
    """An S3 ``<Error>`` document for a refusal made before any handler
    ran (no request id exists yet)."""
    return xml.document("Error", [("Code", code), ("Message", message)], namespace=None)


class UploadBudget:
    """The node-wide budget of request-body bytes held in memory.

    A request whose body may hold memory reserves its share on its headers
    (:meth:`size_for`) and gives it back when it ends. When the budget is
    spent, the request waits, its socket paused and no ``100 Continue``
    sent (backpressure), first come first served; after ``wait_seconds``
    without a share it is refused with ``503 SlowDown``, which S3 clients
    retry with back-off.
    """

    # Bodies this small need no share: one socket read holds them, and
    # the connection limit bounds how many there are (1,024 x 64 KiB).
    small_body_bytes = 64 * 1024
    # The most one upload holds: the body stream's high-water mark (1 MiB)
    # plus objects.streams' pipeline (one 4 MiB chunk filling, one being
    # hashed, three being written: 20 MiB), rounded up for a piece read
    # past the marks. An aws-chunked body with signed chunks of the
    # maximum 16 MiB can hold more; clients sign 64 KiB chunks.
    per_upload_bytes = 24 * MiB

    def __init__(self, clock, limit_bytes, wait_seconds=10.0):
        self.clock = clock
        self.limit = limit_bytes
        self.wait_seconds = wait_seconds
        self.used = 0
        self._waiting = deque()
        self.counters = {"waited": 0, "refused": 0}

    def size_for(self, length):
        """The share a body of ``length`` bytes (None: chunked) reserves."""
        if length is not None and length <= self.small_body_bytes:
            return 0
        share = self.per_upload_bytes if length is None else min(length, self.per_upload_bytes)
        return min(share, self.limit)

    def try_reserve(self, amount):
        """Reserve ``amount`` now if it is free and nobody waits before us."""
        if self._waiting or self.used + amount > self.limit:
            return False
        self.used += amount
        return True

    def wait(self, amount):
        """A Deferred firing True once ``amount`` is reserved, or False
        after ``wait_seconds``; cancel it to stop waiting."""
        self.counters["waited"] += 1
        entry = [amount, None, None]
        entry[1] = Deferred(lambda _: self._forget(entry))
        entry[2] = self.clock.callLater(self.wait_seconds, self._expire, entry)
        self._waiting.append(entry)
        return entry[1]

    def release(self, amount):
        self.used -= amount
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            amount, waiter, timer = self._waiting.popleft()
            timer.cancel()
            self.used += amount
            waiter.callback(True)

    def _expire(self, entry):
        self._waiting.remove(entry)
        self.counters["refused"] += 1
        entry[1].callback(False)

    def _forget(self, entry):
        if entry in self._waiting:
            self._waiting.remove(entry)
            entry[2].cancel()


class BodyStream:
    """The request body as an async iterator of ``bytes`` pieces."""

    # Bytes held before the socket is paused; resumed below low_water.
    # Kept small: the kernel's socket buffer keeps filling while we are
    # paused, so a larger mark buys no throughput, only memory per upload
    # (measured: 8 MiB marks cost ~30 MiB RSS more on a 512 MiB PUT).
    high_water = 1024 * 1024
    low_water = 256 * 1024

    def __init__(self, request, admission=None):
        self._request = request
        self._pieces = deque()
        self._buffered = 0
        self._done = False
        self._error = None
        self._waiter = None
        self._paused = False
        self._continued = False
        self.received = 0
        # A Deferred of the budget's answer while this body waits for its
        # share; the socket stays paused until then.
        self._admission = admission
        if admission is not None:
            request.transport.pauseProducing()

    @property
    def complete(self):
        return self._done

    @property
    def reading_paused(self):
        """Whether the node, not the client, is holding the body back."""
        return self._paused or self._admission is not None

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def feed(self, data):
        if self._error is not None or self._done:
            return
        self.received += len(data)
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > self.high_water and not self._paused:
            self._paused = True
            if self._admission is None:
                self._request.transport.pauseProducing()
        self._wake()

    def finish(self):
        self._done = True
        self._wake()

    def fail(self, error):
        if not self._done:
            self._error = error
        self._wake()

    def __aiter__(self):
        return self

    async def _admit(self):
        admission = self._admission
        granted = await admission
        self._admission = None
        if not granted:
            raise S3Error("SlowDown", "The node's memory for request bodies is in use; "
                                      "retry in a moment.")
        if not self._paused and not self._request.gone:
            self._request.transport.resumeProducing()

    async def __anext__(self):
        if self._admission is not None:
            await self._admit()
        if not self._continued:
            self._continued = True
            self._request.send_continue()
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = Deferred()
            await self._waiter
        data = b"".join(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
        self._pieces.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._request.transport.resumeProducing()
        return data

    async def read_all(self, limit):
        """The whole body as bytes, or None if it is larger than ``limit``
        (then at most ``limit`` plus one piece has been read)."""
        parts = []
        size = 0
        async for piece in self:
            size += len(piece)
            if size > limit:
                return None
            parts.append(piece)
        return b"".join(parts)


class _EmptyBody(BodyStream):
    complete = True
    reading_paused = False
    received = 0

    def __init__(self):
        pass

    # A request without a body can still lose its connection (a client
    # leaving a download, a broken request): there is nothing to end or fail.
    def finish(self):
        pass

    def fail(self, error):
        pass

    async def __anext__(self):
        raise StopAsyncIteration

    async def read_all(self, limit):
        return b""


EMPTY_BODY = _EmptyBody()


class S3Request(server.Request):
    """A Request dispatched on its headers, its body streamed to the handler."""

    body = EMPTY_BODY
    gone = False
    # Set by S3Channel before gotLength: requests with a body stream it.
    streamed = False
    # The body's declared length (None: chunked), for handlers that refuse
    # a body on its size before reading it.
    body_length = 0
    _expects_continue = False
    _budget_share = 0
    _rate_timer = None

    def gotLength(self, length):
        if not self.streamed:
            super().gotLength(length)
            return
        # The body never goes to self.content; Twisted's cleanup still
        # expects a file there.
        self.content = io.BytesIO()
        self.body_length = length
        site = self.channel.site
        admission = None
        budget = site.upload_budget
        if budget is not None:
            share = budget.size_for(length)
            if share:
                if budget.try_reserve(share):
                    self._budget_share = share
                else:
                    admission = budget.wait(share)
                    admission.addCallbacks(self._admitted, self._not_admitted,
                                           callbackArgs=(share,))
        self.body = BodyStream(self, admission)
        if site.body_min_rate:
            self._rate_window = (0, self.body.reading_paused)
            self._rate_timer = self.channel.callLater(site.body_rate_window_seconds,
                                                      self._check_body_rate)

    def _admitted(self, granted, share):
        if granted:
            self._budget_share = share
        return granted

    @staticmethod
    def _not_admitted(failure):
        # The request ended while waiting (see _end_of_body_limits).
        failure.trap(CancelledError)
        return False

    def _check_body_rate(self):
        """Refuse a body that arrives slower than the site's minimum rate
        (slowloris): counted per window, skipping windows in which the node
        itself paused the socket."""
        self._rate_timer = None
        body = self.body
        if body.complete or body._error is not None:
            return
        site = self.channel.site
        window = site.body_rate_window_seconds
        received, paused = self._rate_window
        if not paused and not body.reading_paused \
                and body.received - received < site.body_min_rate * window:
            body.fail(S3Error("RequestTimeout", f"The body arrived slower than "
                                                f"{site.body_min_rate} bytes/s."))
            return
        self._rate_window = (body.received, body.reading_paused)
        self._rate_timer = self.channel.callLater(window, self._check_body_rate)

    def _end_of_body_limits(self):
        if not self.streamed:
            return
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None
        admission = self.body._admission
        if admission is not None:
            admission.cancel()
        if self._budget_share:
            share, self._budget_share = self._budget_share, 0
            self.channel.site.upload_budget.release(share)

    def handleContentChunk(self, data):
        if self.streamed:
            self.body.feed(data)
        else:
            super().handleContentChunk(data)

    def dispatch_early(self, command, path, version):
        """Process the request now, before its body (see S3Channel)."""
        expect = self.requestHeaders.getRawHeaders(b"expect")
        self._expects_continue = bool(
            expect and expect[0].lower() == b"100-continue" and version == b"HTTP/1.1")
        self._process_now(command, path, version)

    def requestReceived(self, command, path, version):
        if self.streamed:
            self.body.finish()
        else:
            self._process_now(command, path, version)

    def _process_now(self, command, path, version):
        # The S3 pipeline parses the raw query itself (it must, for the
        # signature); twisted.web's parse into self.args would be a second,
        # unused parse on every request.
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.partition(b"?")[0]
        self.args = {}
        self.process()

    def send_continue(self):
        if self._expects_continue and not self.startedWriting and not self.gone:
            self._expects_continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def prepare_close_if_body_unread(self):
        """Call before writing a response: if the body has not all arrived,
        the connection cannot be reused and is closed after the response."""
        if not self.body.complete:
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
            self.channel.persistent = False
            self.body.fail(BodyIncomplete("response sent before the body was read"))

    def write(self, data):
        if not self.startedWriting:
            # Whoever answers (the S3 pipeline, a /_z4/ resource, twisted.web's
            # own 404 or 405), an unread body closes the connection.
            self.prepare_close_if_body_unread()
        super().write(data)

    def finish(self):
        self._end_of_body_limits()
        super().finish()

    def connectionLost(self, reason):
        self.gone = True
        self.body.fail(BodyIncomplete(str(reason.value)))
        self._end_of_body_limits()
        super().connectionLost(reason)


class S3Channel(http.HTTPChannel):
    """HTTPChannel that dispatches requests with a body on their headers,
    and refuses what it cannot parse with an S3 error document."""

    _header_timer = None

    def connectionMade(self):
        super().connectionMade()
        self.site.open_connections += 1

    def dataReceived(self, data):
        if self.line_mode and self._header_timer is None and self.site.header_timeout_seconds:
            # The first bytes of a request: its headers have this long to
            # arrive, however they trickle in (slowloris).
            self._header_timer = self.callLater(self.site.header_timeout_seconds,
                                                self._headers_too_slow)
        super().dataReceived(data)

    def _headers_too_slow(self):
        self._header_timer = None
        self.refuse(400, "RequestTimeout", "The request headers did not arrive within "
                                           f"{self.site.header_timeout_seconds:g} s.")

    def lineReceived(self, line):
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(400, "RequestHeaderSectionTooLarge",
                        f"The request line and headers exceed {self.totalHeadersSize} bytes.")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line):
        self.refuse(400, "RequestHeaderSectionTooLarge",
                    f"A request line or header exceeds {self.MAX_LENGTH} bytes.")

    def headerReceived(self, line):
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(400, "RequestHeaderSectionTooLarge",
                        f"The request has more than {self.maxHeaders} headers.")
            return False
        return super().headerReceived(line)

    def _respondToBadRequestAndDisconnect(self):
        # twisted.web's answer to anything it cannot parse is a bare 400.
        request = self.requests[-1] if self.requests else None
        if request is not None and request.streamed:
            # A malformed chunked body of a request already dispatched: its
            # handler answers, learning of it from the body.
            self.persistent = False
            self.pauseProducing()
            request.body.fail(S3Error("IncompleteBody", "The chunked transfer coding "
                                                        "of the body is malformed."))
            return
        self.refuse(400, "BadRequest", "The request could not be parsed as HTTP/1.1.")

    def refuse(self, status, code, message):
        """Answer a request no handler has seen with an S3 error, then
        close the connection (what follows on it cannot be parsed)."""
        self._cancel_header_timer()
        if any(request.startedWriting for request in self.requests):
            # A response is under way: an error now would corrupt it.
            self.transport.abortConnection()
            return
        body = error_document(code, message)
        reason = http.RESPONSES.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (status, reason, len(body), body))
        self.persistent = False
        self.setRawMode()
        self.rawDataReceived = lambda data: None
        self.loseConnection()

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def allHeadersReceived(self):
        self._cancel_header_timer()
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        request.streamed = self.length != 0
        if not request.streamed:
            # twisted.web's own handling, which answers 100 to an empty body
            # that expects it. Keep that: the aws CLI v1's botocore, given a
            # final answer without the 100 it asked for, misreads the next
            # response on the connection (the upload after every empty file
            # in an `aws s3 sync` timed out).
            super().allHeadersReceived()
            return
        request.gotLength(self.length)
        request.dispatch_early(self._command, self._path, self._version)

    _host = None

    def getHost(self):
        # twisted.web asks for every request (Request.__init__), costing a
        # getsockname() syscall each time; a connection's local address
        # never changes.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def writeHeaders(self, version, code, reason, headers):
        # S3 sends x-amz-* names in lower case, and SDKs take user metadata
        # keys from them as written (boto3 would report X-Amz-Meta-Colour
        # as "Colour"); Headers stores names in Canonical-Case.
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            if name.startswith(b"X-Amz-"):
                name = name.lower()
            for value in values:
                lines.extend((name, b": ", value, b"\r\n"))
        lines.append(b"\r\n")
        self.transport.writeSequence(lines)

    def allContentReceived(self):
        # The request was answered and finished before its body ended: the
        # connection is closing; the rest of the body is dropped.
        if not self.requests:
            return
        super().allContentReceived()

    def connectionLost(self, reason):
        self._cancel_header_timer()
        self.site.open_connections -= 1
        super().connectionLost(reason)


class _Refusal(Protocol):
    """A connection beyond the site's maximum: answered 503 SlowDown and
    closed before a byte of it is read."""

    def connectionMade(self):
        body = error_document("SlowDown", "The node has too many open connections; "
                                          "retry in a moment.")
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                             b"application/xml\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
        self.transport.loseConnection()


class S3Site(server.Site):
    """The node's HTTP site, with its limits (all off unless given):

    - ``max_connections``: open connections past it are answered 503
      SlowDown and closed;
    - ``header_timeout_seconds``: a request's line and headers must all
      arrive within this long of its first byte;
    - ``body_min_rate`` (bytes/s): a body must arrive at least this fast
      in every window of ``body_rate_window_seconds`` in which the node did
      not pause it itself (Apache's mod_reqtimeout ``MinRate``);
    - ``upload_budget``: an :class:`UploadBudget` for body bytes in memory.

    ``timeout`` is twisted.web's idle timeout of a connection.
    """

    requestFactory = S3Request
    protocol = S3Channel
    body_rate_window_seconds = 20

    def __init__(self, resource, *, max_connections=None, header_timeout_seconds=None,
                 body_min_rate=None, upload_budget=None, **kwargs):
        super().__init__(resource, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_seconds = header_timeout_seconds
        self.body_min_rate = body_min_rate
        self.upload_budget = upload_budget
        self.open_connections = 0

    def buildProtocol(self, addr):
        if self.max_connections is not None and self.open_connections >= self.max_connections:
            return _Refusal()
        return super().buildProtocol(addr)

    def log(self, request):
        # Access logging is done by the S3 layer (with request ids, never
        # with signatures or query credentials).
        pass


@implementer(IPushProducer)
class ResponseWriter:
    """Writes a streamed response body, waiting while the transport's buffer
    is full, so a slow client costs no more than one piece of memory."""

    def __init__(self, request):
        self._request = request
        self._paused = False
        self._waiter = None
        self.stopped = False
        request.registerProducer(self, True)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    async def write(self, data):
        if self.stopped or self._request.gone:
            raise BodyIncomplete("client went away")
        self._request.write(data)
        while self._paused and not self.stopped:
            self._waiter = Deferred()
            await self._waiter
        if self.stopped:
            raise BodyIncomplete("client went away")

    def close(self):
        if not self._request.gone:
            self._request.unregisterProducer()

