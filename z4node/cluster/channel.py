"""The peer channel: one multiplexed, authenticated TCP connection to each
peer, carrying calls and streamed bodies.

Owns: the wire format of peer calls, the handshake that turns the cluster
secret into keys for one connection, per-stream flow control, and the two
ends: :class:`PeerChannel` (calls out, one connection per peer, opened on
first use) and :class:`ChannelFactory` (calls in, dispatched to handlers by
operation name). What the operations mean lives with their handlers.

Why not sealed JSON over HTTP, as the first push/pull was: every
replicated request pays for one or more peer calls, and an HTTP request
through treq and twisted.web cost ten times the CPU of a call here (see
docs/cluster.md); a 4 MiB chunk did not fit its buffered body either.

The connection listens on TCP at the gossip port number (SWIM uses that
number over UDP; memberlist does the same), so a cluster needs no new port.

Handshake: the client sends ``hello`` (its id, the server's id, a fresh
32-byte nonce), the server answers ``welcome`` (the same ids swapped, the
client's nonce echoed, a nonce of its own). Both are sealed with the
cluster's ``channel`` key by :class:`~z4node.cluster.sealing.Sealer`, which
refuses forged, stale and replayed packets; the echo stops a recorded
welcome being replayed to a client. Each direction then has its own key,
derived from the channel key and both nonces, so no frame of one
connection opens on another.

Frames: ``length(4) || AES-256-GCM(type(1) || stream(4) || payload)``,
the nonce being the frame's sequence number in its direction, never sent:
a frame dropped, repeated, reordered or altered fails to open, and the
connection is closed. The frames use AES-GCM from ``cryptography`` rather
than PyNaCl's secretbox (which seals the handshake): with AES-NI it seals
and opens 64 KiB frames four to six times faster (4-6 GB/s against about
0.9), and frame sealing was a fifth of the coordinator's reactor time in
a replicated 256 MiB PUT. Each direction of each connection has its own
key, so a sequence number is never used twice as a nonce under one key.

Frame types: a call (JSON: op, args, whether a body follows), a reply
(JSON: result or error, whether a body follows), body data, body end,
credit and reset. A body of at most ``INLINE_MAX`` bytes known whole when
it is sent (a record, a small page) travels inside its call or reply
frame, after the JSON and a newline (``"body": "inline"``): one frame
where it would take three, and most peer calls are that small.

Flow control: a receiver grants each stream a window of bytes (256 KiB);
the sender stops when it is used up and goes on as the consumer reads and
grants more, so a slow reader slows its sender, never grows a buffer. The
connection also stops every sender while TCP's send buffer is full.
"""

import json
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.hash import blake2b
from nacl.encoding import RawEncoder
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


# Frame types.
CALL, REPLY, DATA, END, CREDIT, RESET = range(1, 7)

_HEADER = struct.Struct(">BI")  # type, stream id
_LENGTH = struct.Struct(">I")
_MAC = 16
# Body data is cut into frames of at most this many bytes.
MAX_DATA = 64 * 1024
# A frame longer than this (a call or reply header, or data) is refused.
MAX_FRAME = MAX_DATA + 16 * 1024
# Bytes of body a stream may have in flight before its reader grants more.
WINDOW = 256 * 1024
# A body given whole (bytes) and no longer than this goes in its call or
# reply frame.
INLINE_MAX = 32 * 1024
_HANDSHAKE_MAX = 4096
# A connection that has not completed its handshake after this long is
# closed: nobody unauthenticated holds a connection open.
HANDSHAKE_TIMEOUT = 10.0  # seconds


class RpcError(Exception):
    """A peer call failed: unreachable, refused, reset, timed out, or the
    connection was lost."""


class RemoteError(RpcError):
    """The peer ran the call and answered with an error: ``code`` and message."""

    def __init__(self, code, message):
        RpcError.__init__(self, f"{code}: {message}")
        self.code = code


def _direction_key(channel_key, client_nonce, server_nonce, direction):
    return blake2b(client_nonce + server_nonce, digest_size=32, key=channel_key,
                   person=direction, encoder=RawEncoder)


class Body:
    """The body of a call or reply as its reader sees it: an async iterator
    of byte strings. Reading grants the sender more window."""

    def __init__(self, connection, stream_id):
        self._connection = connection
        self._stream_id = stream_id
        self._pieces = []
        self._waiting = None
        self._ended = False
        self._error = None
        self._unacknowledged = 0

    # -- fed by the connection --

    def _data(self, data):
        if not self._ended:
            self._pieces.append(data)
            self._wake()

    def _end(self):
        self._ended = True
        self._wake()

    def _fail(self, error):
        if not self._ended:
            self._error = error
            self._wake()

    def _wake(self):
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    # -- read by the consumer --

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._waiting = Deferred()
            await self._waiting
        piece = self._pieces.pop(0)
        self._unacknowledged += len(piece)
        # Grant in halves of the window: one credit frame per 128 KiB read.
        if self._unacknowledged >= WINDOW // 2:
            self._connection._grant(self._stream_id, self._unacknowledged)
            self._unacknowledged = 0
        return piece

    async def read_all(self, limit):
        """The whole body as bytes; RpcError if it is longer than ``limit``."""
        pieces, size = [], 0
        async for piece in self:
            size += len(piece)
            if size > limit:
                self.cancel()
                raise RpcError(f"body longer than {limit} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    def cancel(self):
        """Stop reading: the sender is told to stop sending."""
        if not self._ended:
            self._discard()
            self._connection._reset(self._stream_id, "cancelled")

    def _discard(self):
        # What is still in flight is dropped on arrival.
        self._ended = True
        self._pieces = []


class Response:
    """What a call returns: the ``result`` dict and the ``body`` (a
    :class:`Body`, or None when the reply has none)."""

    def __init__(self, result, body):
        self.result = result
        self.body = body


class Reply:
    """What a handler returns: a ``result`` dict and an optional ``body``:
    bytes, or an async iterable of bytes streamed after it."""

    def __init__(self, result=None, body=None):
        self.result = result or {}
        self.body = body


class CallError(Exception):
    """Raised by a handler to answer the call with an error ``code``."""

    def __init__(self, code, message=""):
        Exception.__init__(self, f"{code}: {message}")
        self.code = code
        self.message = message


class _Stream:
    """One call on a connection: its send window and, once it arrives, the
    body being received."""

    def __init__(self, stream_id):
        self.id = stream_id
        self.credit = WINDOW
        self.credit_waiter = None
        self.body = None
        self.reply = None  # Deferred of the Response (client side)
        self.closed = False  # reset, or the connection is gone
        self.stop_sending = False  # the body we send is no longer wanted

    def add_credit(self, amount):
        self.credit += amount
        self._wake_sender()

    def halt_sending(self):
        self.stop_sending = True
        self._wake_sender()

    def _wake_sender(self):
        waiter, self.credit_waiter = self.credit_waiter, None
        if waiter is not None:
            waiter.callback(None)


@implementer(IPushProducer)
class ChannelProtocol(Protocol):
    """One authenticated connection, either end (``is_client``)."""

    log = Logger()

    def __init__(self, clock, sealer, channel_key, local_id, peer_id=None,
                 handlers=None, random_bytes=os.urandom):
        self._clock = clock
        self._sealer = sealer
        self._channel_key = channel_key
        self.local_id = local_id
        self.peer_id = peer_id  # known to a client; learnt by a server
        self.is_client = handlers is None
        self._handlers = handlers
        self._random_bytes = random_bytes
        self._buffer = bytearray()
        self._nonce = None
        self._send_cipher = self._receive_cipher = None
        self._send_seq = self._receive_seq = 0
        self._streams = {}
        self._next_stream = 1
        self._paused = False
        self._writable = []
        self._ready = False
        self._ready_waiters = []
        self._aborted = False
        self._lost = None  # the RpcError every later use raises, once closed
        self._handshake_timer = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self._handshake_timer = self._clock.callLater(
            HANDSHAKE_TIMEOUT, self._abort, "no handshake in time", quiet=True)
        if self.is_client:
            self._nonce = self._random_bytes(32)
            self._send_handshake({"t": "hello", "from": self.local_id, "to": self.peer_id,
                                  "nonce": self._nonce.hex()})

    def connectionLost(self, reason):
        self.fail(RpcError(f"connection to {self.peer_id} lost: "
                           f"{reason.getErrorMessage()}"))

    def fail(self, error):
        """The connection is over (lost, or never made): everything waiting
        on it fails with ``error``."""
        if self._lost is not None:
            return
        self._lost = error
        self._cancel_handshake_timer()
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.errback(error)
        for stream in list(self._streams.values()):
            self._fail_stream(stream, error)
        self._streams.clear()
        self._resume_writers()

    def when_ready(self):
        """A Deferred that fires with this protocol once the handshake is
        done, or fails with RpcError if the connection ends first."""
        if self._lost is not None:
            return fail(self._lost)
        if self._ready:
            return succeed(self)
        waiter = Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    @property
    def usable(self):
        return self._lost is None and not self._aborted

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._resume_writers()

    def stopProducing(self):
        self.transport.loseConnection()

    def _resume_writers(self):
        waiters, self._writable = self._writable, []
        for waiter in waiters:
            waiter.callback(None)

    def _abort(self, why, quiet=False):
        if not quiet:
            self.log.warn("peer channel with {peer}: {why}; closing", peer=self.peer_id,
                          why=why)
        self._aborted = True
        self.transport.abortConnection()

    def _refuse_handshake(self):
        # Counted by the sealer (forged, stale, replayed...), not logged:
        # anyone can knock, and a log line each would be a flood.
        self._abort("handshake refused", quiet=True)

    def _cancel_handshake_timer(self):
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    # -- reading frames ----------------------------------------------------------

    def dataReceived(self, data):
        self._buffer += data
        start = 0  # frames before it are handled; the buffer is trimmed once
        try:
            while len(self._buffer) - start >= 4:
                (length,) = _LENGTH.unpack_from(self._buffer, start)
                limit = _HANDSHAKE_MAX if self._receive_cipher is None else MAX_FRAME + _MAC + 5
                if length > limit:
                    return self._abort(f"frame of {length} bytes")
                end = start + 4 + length
                if len(self._buffer) < end:
                    return
                if self._receive_cipher is None:
                    self._handshake_received(bytes(self._buffer[start + 4:end]))
                else:
                    self._frame_received(start + 4, end)
                start = end
                if not self.usable:
                    return
        finally:
            del self._buffer[:start]

    def _frame_received(self, start, end):
        """Open and dispatch the frame at ``self._buffer[start:end]``."""
        nonce = self._receive_seq.to_bytes(12, "big")
        try:
            # Opened where it lies: no copy of the sealed bytes first.
            with memoryview(self._buffer) as view, view[start:end] as sealed:
                plain = self._receive_cipher.decrypt(nonce, sealed, None)
        except InvalidTag:
            return self._abort("a frame did not authenticate")
        self._receive_seq += 1
        kind, stream_id = _HEADER.unpack_from(plain)
        payload = plain[_HEADER.size:]
        try:
            self._dispatch(kind, stream_id, payload)
        except (ValueError, KeyError, TypeError) as e:
            self._abort(f"malformed frame ({e})")

    def _dispatch(self, kind, stream_id, payload):
        if kind == CALL and not self.is_client:
            self._call_received(stream_id, *_header_and_inline(payload))
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream already finished or reset here: late frames are harmless
        if kind == REPLY and self.is_client:
            self._reply_received(stream, *_header_and_inline(payload))
        elif kind == DATA and stream.body is not None:
            stream.body._data(payload)
        elif kind == END and stream.body is not None:
            stream.body._end()
            self._finish_receiving(stream)
        elif kind == CREDIT:
            stream.add_credit(_LENGTH.unpack(payload)[0])
        elif kind == RESET:
            self._fail_stream(stream, RpcError(f"{self.peer_id} reset the stream: "
                                               f"{payload.decode('utf-8', 'replace')}"))
            self._streams.pop(stream_id, None)
        else:
            raise ValueError(f"unexpected frame type {kind}")

    # -- handshake ---------------------------------------------------------------

    def _send_handshake(self, message):
        packet = self._sealer.seal(json.dumps(message).encode("utf-8"))
        self.transport.write(_LENGTH.pack(len(packet)) + packet)

    def _handshake_received(self, packet):
        payload = self._sealer.open(packet)
        try:
            message = json.loads(payload) if payload is not None else None
            if message is None or message.get("to") != self.local_id:
                return self._refuse_handshake()
            peer_nonce = bytes.fromhex(message["nonce"])
            if len(peer_nonce) != 32:
                raise ValueError("nonce size")
            if self.is_client:
                if message.get("t") != "welcome" or message.get("from") != self.peer_id \
                        or message.get("echo") != self._nonce.hex():
                    return self._refuse_handshake()
                client_nonce, server_nonce = self._nonce, peer_nonce
            else:
                if message.get("t") != "hello" or not isinstance(message.get("from"), str):
                    return self._refuse_handshake()
                self.peer_id = message["from"]
                self._nonce = self._random_bytes(32)
                client_nonce, server_nonce = peer_nonce, self._nonce
                self._send_handshake({"t": "welcome", "from": self.local_id,
                                      "to": self.peer_id, "nonce": self._nonce.hex(),
                                      "echo": message["nonce"]})
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._refuse_handshake()
        self._ready = True
        self._cancel_handshake_timer()
        to_server = _direction_key(self._channel_key, client_nonce, server_nonce, b"z4-c2s")
        to_client = _direction_key(self._channel_key, client_nonce, server_nonce, b"z4-s2c")
        if self.is_client:
            self._send_cipher, self._receive_cipher = AESGCM(to_server), AESGCM(to_client)
        else:
            self._send_cipher, self._receive_cipher = AESGCM(to_client), AESGCM(to_server)
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self)

    # -- writing frames ----------------------------------------------------------

    def _send(self, kind, stream_id, payload=b""):
        if not self.usable:
            raise self._lost or RpcError(f"connection to {self.peer_id} closed")
        nonce = self._send_seq.to_bytes(12, "big")
        self._send_seq += 1
        sealed = self._send_cipher.encrypt(nonce, _HEADER.pack(kind, stream_id) + payload, None)
        self.transport.writeSequence((_LENGTH.pack(len(sealed)), sealed))

    def _send_json(self, kind, stream_id, obj, inline=b""):
        """Send a call or reply header, with an inline body after it if any."""
        header = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self._send(kind, stream_id, header + b"\n" + inline if inline else header)

    def _received_body(self, stream_id, message, inline):
        """The Body a call or reply header announces (None if none): whole
        already when it came inline."""
        if not message.get("body"):
            return None
        body = Body(self, stream_id)
        if message["body"] == "inline":
            body._data(inline)
            body._end()
        return body

    def _grant(self, stream_id, amount):
        if stream_id in self._streams and self.usable:
            self._send(CREDIT, stream_id, _LENGTH.pack(amount))

    def _reset(self, stream_id, why):
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.closed = True
            stream.halt_sending()
            if self.usable:
                self._send(RESET, stream_id, why.encode("utf-8"))

    async def _send_body(self, stream, body):
        """Stream ``body`` (async iterable of bytes) as DATA frames and END,
        within the stream's window and while TCP takes it."""
        async for piece in body:
            view = memoryview(piece)
            for start in range(0, len(view), MAX_DATA):
                frame = view[start:start + MAX_DATA]
                while True:
                    if stream.stop_sending or not self.usable:
                        raise self._lost or RpcError(
                            f"{self.peer_id} no longer wants stream {stream.id}")
                    if stream.credit >= len(frame) and not self._paused:
                        break
                    waiter = Deferred()
                    if self._paused:
                        self._writable.append(waiter)
                    else:
                        stream.credit_waiter = waiter
                    await waiter
                stream.credit -= len(frame)
                self._send(DATA, stream.id, frame)
        self._send(END, stream.id)

    def _fail_stream(self, stream, error):
        stream.closed = True
        stream.halt_sending()
        if stream.body is not None:
            stream.body._fail(error)
        if stream.reply is not None and not stream.reply.called:
            stream.reply.errback(error)

    def _finish_receiving(self, stream):
        # A client's stream ends with the reply body; a server's is kept
        # until its reply is sent (see _serve).
        if self.is_client:
            self._streams.pop(stream.id, None)

    # -- client side ---------------------------------------------------------------

    def call(self, op, args, body=None):
        """Send one call; a Deferred of its :class:`Response`."""
        stream = _Stream(self._next_stream)
        self._next_stream += 1
        self._streams[stream.id] = stream
        # Cancelling the reply (a timeout) resets the stream at the peer.
        stream.reply = Deferred(lambda _: self._reset(stream.id, "cancelled by the caller"))
        if _inlined(body):
            self._send_json(CALL, stream.id, {"op": op, "args": args, "body": "inline"},
                            body)
            return stream.reply
        self._send_json(CALL, stream.id, {"op": op, "args": args, "body": body is not None})
        if body is not None:
            sending = Deferred.fromCoroutine(self._send_body(stream, _pieces(body)))
            sending.addErrback(self._body_failed, stream)
        return stream.reply

    def _body_failed(self, failure, stream):
        if stream.stop_sending:
            return  # answered, reset or disconnected: the reply says which
        self.log.failure("peer call to {peer}: request body failed", failure,
                         peer=self.peer_id)
        self._reset(stream.id, "request body failed")
        if not stream.reply.called:
            stream.reply.errback(RpcError(f"request body failed: {failure.getErrorMessage()}"))

    def _reply_received(self, stream, message, inline):
        # Whatever of the request body is not sent yet is not wanted.
        stream.halt_sending()
        if stream.reply.called:
            return
        if not message.get("ok"):
            self._streams.pop(stream.id, None)
            stream.reply.errback(RemoteError(str(message.get("code")),
                                             str(message.get("message", ""))))
            return
        stream.body = self._received_body(stream.id, message, inline)
        if stream.body is None or message["body"] == "inline":
            self._streams.pop(stream.id, None)
        stream.reply.callback(Response(message.get("result") or {}, stream.body))

    # -- server side ---------------------------------------------------------------

    def _call_received(self, stream_id, message, inline):
        if stream_id in self._streams or not isinstance(message.get("op"), str) \
                or not isinstance(message.get("args"), dict):
            raise ValueError("bad call")
        stream = _Stream(stream_id)
        self._streams[stream_id] = stream
        stream.body = self._received_body(stream_id, message, inline)
        Deferred.fromCoroutine(self._serve(stream, message["op"], message["args"]))

    async def _serve(self, stream, op, args):
        handler = self._handlers.get(op)
        try:
            if handler is None:
                raise CallError("UnknownOperation", op)
            reply = await handler(self.peer_id, args, stream.body)
            if stream.body is not None:
                stream.body._discard()
        except CallError as e:
            self._answer(stream, {"ok": False, "code": e.code, "message": e.message})
            return
        except RpcError as e:
            self._answer(stream, {"ok": False, "code": "PeerError", "message": str(e)})
            return
        except CancelledError:
            self._answer(stream, {"ok": False, "code": "Cancelled", "message": op})
            return
        except Exception:
            self.log.failure("peer call {op} from {peer} failed", op=op, peer=self.peer_id)
            self._answer(stream, {"ok": False, "code": "InternalError", "message": op})
            return
        if _inlined(reply.body):
            if self._answer(stream, {"ok": True, "result": reply.result, "body": "inline"},
                            reply.body):
                self._streams.pop(stream.id, None)
            return
        if not self._answer(stream, {"ok": True, "result": reply.result,
                                     "body": reply.body is not None}):
            return
        if reply.body is None:
            self._streams.pop(stream.id, None)
            return
        try:
            await self._send_body(stream, _pieces(reply.body))
        except RpcError:
            return  # the caller went away or reset: nothing more to tell it
        except Exception:
            self.log.failure("peer call {op} from {peer}: reply body failed", op=op,
                             peer=self.peer_id)
            self._reset(stream.id, "reply body failed")
            return
        self._streams.pop(stream.id, None)

    def _answer(self, stream, message, inline=b""):
        if stream.closed or not self.usable:
            self._streams.pop(stream.id, None)
            return False
        self._send_json(REPLY, stream.id, message, inline)
        if not message["ok"]:
            self._streams.pop(stream.id, None)
        return True


def _inlined(body):
    """Whether ``body`` goes inside its call or reply frame."""
    return isinstance(body, bytes) and len(body) <= INLINE_MAX


async def _pieces_of(data):
    yield data


def _pieces(body):
    """A body to stream: an async iterable of bytes (``body`` given as
    bytes too long to go inline becomes one)."""
    return _pieces_of(body) if isinstance(body, bytes) else body


def _header_and_inline(payload):
    """A call or reply frame's JSON header and the inline body after it."""
    header, _, inline = payload.partition(b"\n")
    return json.loads(header), inline


class ChannelFactory(Factory):
    """The server side: accepts peers' connections and serves ``handlers``,
    a dict of operation name to ``async handler(peer_id, args, body)`` that
    returns a :class:`Reply` (or raises :class:`CallError`)."""

    def __init__(self, clock, sealer, channel_key, local_id, handlers):
        self._clock = clock
        self._sealer = sealer
        self._channel_key = channel_key
        self.local_id = local_id
        self.handlers = handlers

    def buildProtocol(self, addr):
        return ChannelProtocol(self._clock, self._sealer, self._channel_key, self.local_id,
                               handlers=self.handlers)


class PeerChannel:
    """The client side: one connection per peer, opened on first use and
    again after it is lost; calls to one peer share it.

    ``connect(member, protocol)`` connects ``protocol`` to the member's
    channel address and returns a Deferred that fails if it cannot.
    """

    log = Logger()

    # A peer that does not finish the handshake, or does not answer a call,
    # within this long is taken as unreachable for that call.
    connect_timeout = 5.0  # seconds
    call_timeout = 10.0  # seconds, until the reply header arrives

    def __init__(self, clock, sealer, channel_key, local_id, connect):
        self._clock = clock
        self._sealer = sealer
        self._channel_key = channel_key
        self.local_id = local_id
        self._connect = connect
        self._connections = {}  # peer id -> ChannelProtocol
        # Calls waiting for their reply header -> when they time out, in
        # the order they were made (so in deadline order): one timer, for
        # the oldest, times them all out, where a timer per call cost a
        # cluster GET more CPU than the call's JSON.
        self._waiting = {}
        self._timeouts = None
        self.counters = {"calls": 0, "failures": 0, "connections": 0}
        # Told of every call once it is answered or failed: (op, seconds to
        # the reply's header, whether it failed). Metrics set it.
        self.observe = None

    def _connection(self, member):
        protocol = self._connections.get(member.id)
        if protocol is not None and protocol.usable:
            return protocol
        protocol = ChannelProtocol(self._clock, self._sealer, self._channel_key,
                                   self.local_id, peer_id=member.id)
        self._connections[member.id] = protocol
        self.counters["connections"] += 1
        self._connect(member, protocol).addErrback(lambda f: protocol.fail(
            RpcError(f"cannot connect to {member.id}: {f.getErrorMessage()}")))
        timer = self._clock.callLater(self.connect_timeout, self._handshake_timeout,
                                      protocol)
        protocol.when_ready().addBoth(lambda _: timer.cancel() if timer.active() else None)
        return protocol

    @staticmethod
    def _handshake_timeout(protocol):
        protocol.fail(RpcError(f"no handshake with {protocol.peer_id}"))
        if protocol.transport is not None:
            protocol.transport.abortConnection()

    async def call(self, member, op, args, body=None):
        """Call ``op`` with ``args`` (a JSON-able dict) and an optional
        ``body`` (bytes, or an async iterable of bytes) on ``member``: its
        :class:`Response`. Raises RpcError (RemoteError for an error the
        peer answered)."""
        self.counters["calls"] += 1
        started = self._clock.seconds()
        try:
            protocol = await self._connection(member).when_ready()
            reply = protocol.call(op, args, body)
            self._waiting[reply] = self._clock.seconds() + self.call_timeout
            if self._timeouts is None:
                self._timeouts = self._clock.callLater(self.call_timeout, self._time_out)
            try:
                response = await reply
            except CancelledError:
                raise RpcError(f"{op} to {member.id}: no reply in "
                               f"{self.call_timeout} s") from None
            finally:
                self._waiting.pop(reply, None)
        except RpcError:
            self.counters["failures"] += 1
            if self.observe is not None:
                self.observe(op, self._clock.seconds() - started, True)
            raise
        if self.observe is not None:
            self.observe(op, self._clock.seconds() - started, False)
        return response

    def _time_out(self):
        """Cancel the calls whose time is up; wait for the oldest other."""
        self._timeouts = None
        now = self._clock.seconds()
        for reply, deadline in list(self._waiting.items()):
            if deadline > now:
                self._timeouts = self._clock.callLater(deadline - now, self._time_out)
                return
            del self._waiting[reply]
            reply.cancel()

    def close(self):
        """Close every connection."""
        if self._timeouts is not None and self._timeouts.active():
            self._timeouts.cancel()
        self._timeouts = None
        for protocol in self._connections.values():
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        self._connections.clear()
