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
of the body cannot be told apart from the next request.
"""

import io
from collections import deque

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web import http, server
from zope.interface import implementer


class BodyIncomplete(Exception):
    """The connection was lost before the whole request body arrived."""


class BodyStream:
    """The request body as an async iterator of ``bytes`` pieces."""

    # Bytes held before the socket is paused; resumed below low_water.
    # Kept small: the kernel's socket buffer keeps filling while we are
    # paused, so a larger mark buys no throughput, only memory per upload
    # (measured: 8 MiB marks cost ~30 MiB RSS more on a 512 MiB PUT).
    high_water = 1024 * 1024
    low_water = 256 * 1024

    def __init__(self, request):
        self._request = request
        self._pieces = deque()
        self._buffered = 0
        self._done = False
        self._error = None
        self._waiter = None
        self._paused = False
        self._continued = False
        self.received = 0

    @property
    def complete(self):
        return self._done

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

    async def __anext__(self):
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
        """The whole body as bytes, or None if it is larger than ``limit``."""
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
    # Set by S3Channel before gotLength: S3 requests stream their body;
    # the node's own /_z4/ resources get twisted.web's buffered body.
    streamed = False
    _expects_continue = False

    def gotLength(self, length):
        if not self.streamed:
            super().gotLength(length)
            return
        # The body never goes to self.content; Twisted's cleanup still
        # expects a file there.
        self.content = io.BytesIO()
        self.body = BodyStream(self)

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
        self._process_s3(command, path, version)

    def requestReceived(self, command, path, version):
        if self.streamed:
            self.body.finish()
        elif path.startswith(S3Channel.buffered_prefix):
            super().requestReceived(command, path, version)
        else:
            self._process_s3(command, path, version)

    def _process_s3(self, command, path, version):
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

    def connectionLost(self, reason):
        self.gone = True
        self.body.fail(BodyIncomplete(str(reason.value)))
        super().connectionLost(reason)


class S3Channel(http.HTTPChannel):
    """HTTPChannel that dispatches requests with a body on their headers."""

    # Paths served by ordinary twisted.web resources (peer RPC, status),
    # whose small bodies are buffered as usual.
    buffered_prefix = b"/_z4/"

    def allHeadersReceived(self):
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        request.streamed = self.length != 0 and not self._path.startswith(self.buffered_prefix)
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


class S3Site(server.Site):
    requestFactory = S3Request
    protocol = S3Channel

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

