"""Tests for z4node.cluster.channel: the peer channel's handshake, calls,
streamed bodies, flow control and failures, on an in-memory connection
(twisted.test.iosim) with a fake clock, and once over real loopback TCP."""

import hashlib
import json

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from z4node.cluster import channel
from z4node.cluster.channel import (CallError, ChannelFactory, PeerChannel, RemoteError,
                                    Reply, RpcError)
from z4node.cluster.members import Member
from z4node.cluster.sealing import Sealer, derive_key

SECRET = "channel-test-cluster-secret"
EPOCH = 1_700_000_000.0


def member(name, port=9671):
    return Member(name, ("127.0.0.1", port), 9672, ("127.0.0.1", 9670))


async def pieces(data, size):
    for start in range(0, len(data), size):
        yield data[start:start + size]


class Server:
    """The handlers of a test server, recording what they saw."""

    def __init__(self, clock):
        self.clock = clock
        self.seen = []
        self.hold = defer.Deferred()
        self.handlers = {"echo": self.echo, "digest": self.digest, "blob": self.blob,
                         "mirror": self.mirror, "refuse": self.refuse, "hang": self.hang,
                         "crash": self.crash}

    async def echo(self, peer, args, body):
        self.seen.append((peer, args))
        return Reply({"args": args})

    async def digest(self, peer, args, body):
        h = hashlib.sha256()
        size = 0
        async for piece in body:
            h.update(piece)
            size += len(piece)
        return Reply({"sha256": h.hexdigest(), "size": size})

    async def blob(self, peer, args, body):
        return Reply({"size": args["size"]}, pieces(b"x" * args["size"], 100_000))

    async def mirror(self, peer, args, body):
        return Reply({"n": args["n"]}, await body.read_all(10_000_000))

    async def refuse(self, peer, args, body):
        raise CallError("NoSuchChunk", "not here")

    async def hang(self, peer, args, body):
        await self.hold
        return Reply()

    async def crash(self, peer, args, body):
        raise ZeroDivisionError("bug")


class Network:
    """PeerChannel clients connected to ChannelFactory servers through
    iosim pumps, all on one fake clock."""

    def __init__(self, testcase, client_secret=SECRET, server_secret=SECRET):
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.server = Server(self.clock)
        self.factory = ChannelFactory(
            self.clock, Sealer(derive_key(server_secret, b"channel"), self.clock),
            derive_key(server_secret, b"channel"), "server", self.server.handlers)
        self.pumps = []
        self.server_protocols = []
        self.client = PeerChannel(
            self.clock, Sealer(derive_key(client_secret, b"channel"), self.clock),
            derive_key(client_secret, b"channel"), "client", self.connect)
        testcase.addCleanup(self.client.close)

    def connect(self, member, protocol):
        server = self.factory.buildProtocol(None)
        self.server_protocols.append(server)
        self.pumps.append(iosim.connect(
            server, iosim.makeFakeServer(server), protocol, iosim.makeFakeClient(protocol),
            greet=False, clock=self.clock))
        return defer.succeed(None)

    def flush(self):
        for pump in list(self.pumps):
            pump.flush()

    def call(self, op, args=None, body=None):
        d = defer.Deferred.fromCoroutine(
            self.client.call(member("server"), op, args or {}, body))
        self.flush()
        return d


class CallTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network(self)

    def test_call_and_reply(self):
        response = self.successResultOf(self.net.call("echo", {"n": 1}))
        self.assertEqual(response.result, {"args": {"n": 1}})
        self.assertIsNone(response.body)
        # The server learnt who called from the authenticated handshake.
        self.assertEqual(self.net.server.seen, [("client", {"n": 1})])

    def test_calls_share_one_connection(self):
        for i in range(5):
            self.successResultOf(self.net.call("echo", {"n": i}))
        self.assertEqual(len(self.net.pumps), 1)
        self.assertEqual(self.net.client.counters["connections"], 1)

    def test_request_body_streams_to_the_handler(self):
        data = bytes(range(256)) * 8000  # 2 MB: many windows
        response = self.successResultOf(self.net.call("digest", body=pieces(data, 70_000)))
        self.assertEqual(response.result, {"sha256": hashlib.sha256(data).hexdigest(),
                                           "size": len(data)})

    def test_reply_body_streams_to_the_caller(self):
        response = self.successResultOf(self.net.call("blob", {"size": 1_000_000}))
        body = defer.Deferred.fromCoroutine(response.body.read_all(2_000_000))
        self.net.flush()
        self.assertEqual(self.successResultOf(body), b"x" * 1_000_000)

    def test_a_small_whole_body_travels_inside_its_call_and_reply_frames(self):
        """A body given as bytes of at most INLINE_MAX goes in the call's
        (and the reply's) one frame, a newline in it or not; a longer one
        is streamed in DATA frames and an END."""
        self.successResultOf(self.net.call("echo"))
        client = self.net.client._connections["server"]
        server = self.net.server_protocols[0]
        small, large = b"{\"a\":\n1}" * 100, bytes(range(256)) * 400
        for n, (body, frames) in enumerate(
                ((small, 1), (b"", 1), (b"x" * channel.INLINE_MAX, 1), (large, 4))):
            sent, answered = client._send_seq, server._send_seq
            response = self.successResultOf(self.net.call("mirror", {"n": n}, body))
            self.assertEqual(response.result, {"n": n})
            got = defer.Deferred.fromCoroutine(response.body.read_all(10_000_000))
            self.net.flush()
            self.assertEqual(self.successResultOf(got), body)
            self.assertEqual((client._send_seq - sent, server._send_seq - answered),
                             (frames, frames))
        self.assertEqual(client._streams, {})
        self.assertEqual(server._streams, {})

    def test_a_reader_that_does_not_read_holds_back_the_sender(self):
        response = self.successResultOf(self.net.call("blob", {"size": 5_000_000}))
        received = sum(len(p) for p in response.body._pieces)
        # At most one window is in flight without the reader granting more.
        self.assertLessEqual(received, channel.WINDOW)
        self.assertGreater(received, 0)
        body = defer.Deferred.fromCoroutine(response.body.read_all(10_000_000))
        for _ in range(100):
            self.net.flush()
        self.assertEqual(len(self.successResultOf(body)), 5_000_000)

    def test_error_answers_are_remote_errors(self):
        failure = self.failureResultOf(self.net.call("refuse"), RemoteError)
        self.assertEqual(failure.value.code, "NoSuchChunk")
        failure = self.failureResultOf(self.net.call("no-such-op"), RemoteError)
        self.assertEqual(failure.value.code, "UnknownOperation")

    def test_a_handler_bug_is_an_internal_error_not_a_hang(self):
        failure = self.failureResultOf(self.net.call("crash"), RemoteError)
        self.assertEqual(failure.value.code, "InternalError")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        # The connection is still good.
        self.successResultOf(self.net.call("echo"))

    def test_no_reply_in_time_fails_the_call_and_resets_the_stream(self):
        d = self.net.call("hang")
        self.assertNoResult(d)
        self.net.clock.advance(PeerChannel.call_timeout)
        self.net.flush()
        self.failureResultOf(d, RpcError)
        self.assertEqual(self.net.server_protocols[0]._streams, {})
        self.successResultOf(self.net.call("echo"))

    def test_each_call_times_out_on_its_own_deadline(self):
        """One timer serves every waiting call: each still fails exactly
        call_timeout after it was made, and answered calls are not hurt."""
        first = self.net.call("hang")
        self.net.clock.advance(4)
        second = self.net.call("hang")
        self.successResultOf(self.net.call("echo"))
        self.net.clock.advance(PeerChannel.call_timeout - 4)
        self.net.flush()
        self.failureResultOf(first, RpcError)
        self.assertNoResult(second)
        self.net.clock.advance(4)
        self.net.flush()
        self.failureResultOf(second, RpcError)
        self.assertEqual(self.net.client._waiting, {})
        self.assertEqual(self.net.clock.getDelayedCalls(), [])

    def test_a_lost_connection_fails_a_reply_body_being_read(self):
        response = self.successResultOf(self.net.call("blob", {"size": 5_000_000}))
        body = defer.Deferred.fromCoroutine(response.body.read_all(10_000_000))
        self.net.server_protocols[0].transport.abortConnection()
        self.net.flush()
        self.failureResultOf(body, RpcError)
        # The next call opens a new connection.
        self.successResultOf(self.net.call("echo"))
        self.assertEqual(self.net.client.counters["connections"], 2)


class AuthenticationTests(SynchronousTestCase):
    def test_another_secret_is_refused(self):
        net = Network(self, client_secret="some-other-cluster-secret")
        self.failureResultOf(net.call("echo"), RpcError)
        self.assertEqual(net.server.seen, [])
        self.assertEqual(net.factory._sealer.dropped["forged"], 1)
        self.assertTrue(net.server_protocols[0]._aborted)

    def test_a_replayed_hello_is_refused(self):
        net = Network(self)
        hello = json.dumps({"t": "hello", "from": "client", "to": "server",
                            "nonce": "11" * 32}).encode()
        packet = net.client._sealer.seal(hello)
        servers = []
        for _ in range(2):
            server = net.factory.buildProtocol(None)
            server.makeConnection(iosim.makeFakeServer(server))
            server.dataReceived(channel._LENGTH.pack(len(packet)) + packet)
            servers.append(server)
        self.assertTrue(servers[0]._ready)
        self.assertFalse(servers[1]._ready)
        self.assertTrue(servers[1]._aborted)
        self.assertEqual(net.factory._sealer.dropped["replayed"], 1)

    def test_a_connection_without_a_handshake_is_closed(self):
        net = Network(self)
        server = net.factory.buildProtocol(None)
        server.makeConnection(iosim.makeFakeServer(server))
        server.dataReceived(b"\x00\x00")  # half a length, then nothing
        net.clock.advance(channel.HANDSHAKE_TIMEOUT - 1)
        self.assertFalse(server._aborted)
        net.clock.advance(1)
        self.assertTrue(server._aborted)
        # Refused quietly: nothing logged for a stranger's knock.
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_tampered_frame_closes_the_connection(self):
        net = Network(self)
        self.successResultOf(net.call("echo"))
        server = net.server_protocols[0]
        server._receive_seq += 1  # as if a frame had been dropped on the way
        d = net.call("echo")
        self.failureResultOf(d, RpcError)
        self.assertTrue(server._aborted)
        self.assertEqual(len(net.server.seen), 1)

    def test_an_oversized_frame_closes_the_connection_unread(self):
        net = Network(self)
        self.successResultOf(net.call("echo"))
        server = net.server_protocols[0]
        server.dataReceived(channel._LENGTH.pack(channel.MAX_FRAME * 4))
        self.assertTrue(server._aborted)


class TCPTests(TestCase):
    """The same calls over real loopback sockets and the real reactor."""

    @defer.inlineCallbacks
    def test_concurrent_calls_with_bodies(self):
        key = derive_key(SECRET, b"channel")
        server = Server(reactor)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            ChannelFactory(reactor, Sealer(key, reactor), key, "server", server.handlers))
        self.addCleanup(port.stopListening)

        def connect(member, protocol):
            endpoint = TCP4ClientEndpoint(reactor, *member.gossip, timeout=5)
            return connectProtocol(endpoint, protocol)

        client = PeerChannel(reactor, Sealer(key, reactor), key, "client", connect)
        self.addCleanup(client.close)
        target = member("server", port.getHost().port)
        data = b"z4" * 1_500_000
        calls = [client.call(target, "digest", {}, pieces(data, 1 << 20))
                 for _ in range(4)] + [client.call(target, "echo", {"i": i}) for i in range(20)]
        responses = yield defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in calls])
        for response in responses[:4]:
            self.assertEqual(response.result["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual([r.result["args"]["i"] for r in responses[4:]], list(range(20)))
        blob = yield defer.Deferred.fromCoroutine(client.call(target, "blob", {"size": 3_000_000}))
        body = yield defer.Deferred.fromCoroutine(blob.body.read_all(4_000_000))
        self.assertEqual(len(body), 3_000_000)
        self.assertEqual(client.counters["connections"], 1)
