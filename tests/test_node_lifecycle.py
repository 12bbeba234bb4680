"""A node's life under a service manager: readiness through
``$NOTIFY_SOCKET`` (systemd's ``Type=notify``) and a graceful stop
(SIGTERM: new connections refused, uploads in progress finish, exit 0),
on real processes, and the drain itself on a Clock.
"""

import json
import os
import shutil
import signal
import socket
import tempfile
import time
import urllib.request

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone
from twisted.trial import unittest

from tests.nodeprocess import NodeProcess
from tests.s3http import sign
from tests.test_s3_http import RecordingResource, connect
from z4node.admin.cluster_cli import signed_headers
from z4node.node import NodeSite
from z4node.tap import Options

# Generous: the box is shared and loaded; a condition is awaited, never a time.
DEADLINE_SECONDS = 30


def wait_for(condition, what, deadline=DEADLINE_SECONDS):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline} s: {what}")


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def member_state(node, member_id):
    """``member_id``'s state as ``node`` sees it (None if unknown)."""
    url = node.endpoint + "/_z4/peers"
    headers = signed_headers(url, node.credentials(), time.time())
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=10) as response:
        peers = json.load(response)
    return {m["id"]: m["state"] for m in peers["members"]}.get(member_id)


def read_until(sock, marker):
    data = b""
    while marker not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


class NotifySocket:
    """A fake systemd notification socket (a UNIX datagram socket)."""

    def __init__(self, testcase):
        # sun_path holds 108 bytes: a short directory, not the test's.
        directory = tempfile.mkdtemp(prefix="z4notify", dir="/tmp")
        testcase.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        testcase.addCleanup(self.socket.close)
        self.socket.bind(self.path)
        self.socket.settimeout(DEADLINE_SECONDS)

    def receive(self):
        return self.socket.recv(4096)


class ReadinessTests(unittest.TestCase):
    def test_ready_once_serving_and_stopping_on_sigterm(self):
        """With $NOTIFY_SOCKET set the node sends READY=1 once its S3 port
        serves, and STOPPING=1 when told to stop; it exits 0."""
        notify = NotifySocket(self)
        node = NodeProcess(self, env={"NOTIFY_SOCKET": notify.path}).start()
        self.assertEqual(notify.receive(), b"READY=1")
        node.process.send_signal(signal.SIGTERM)
        self.assertEqual(notify.receive(), b"STOPPING=1")
        self.assertEqual(node.process.wait(DEADLINE_SECONDS), 0)

    def test_unusable_notify_socket_is_logged_not_fatal(self):
        """A $NOTIFY_SOCKET nobody listens on costs a warning, not the node."""
        directory = tempfile.mkdtemp(prefix="z4notify", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        node = NodeProcess(self, env={"NOTIFY_SOCKET": os.path.join(directory, "none")})
        node.start()
        wait_for(lambda: "could not tell systemd READY=1" in node.log(), "the warning")


class GracefulStopTests(unittest.TestCase):
    def start_upload(self, node, key, body, part):
        """A PUT of ``body`` whose first ``part`` bytes are sent once the
        node asked for the body (100 Continue: the request is in progress);
        the socket, for the rest."""
        target = f"/drain/{key}"
        headers = sign(node, "PUT", target, {"Content-Length": str(len(body)),
                                             "Expect": "100-continue"},
                       payload_hash="UNSIGNED-PAYLOAD")
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=DEADLINE_SECONDS)
        self.addCleanup(sock.close)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
                     f"{head}\r\n".encode("latin-1"))
        self.assertIn(b"100 Continue", read_until(sock, b"\r\n\r\n"))
        sock.sendall(body[:part])
        return sock

    def test_upload_in_progress_finishes_after_sigterm(self):
        """SIGTERM during an upload: the port refuses new connections, the
        upload still completes (200, and its bytes are there after a
        restart), and the node then exits 0."""
        node = NodeProcess(self).start()
        node.client().create_bucket(Bucket="drain")
        body = os.urandom(3 * 1024 * 1024 + 5)
        sock = self.start_upload(node, "slow", body, 1024 * 1024)
        node.process.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(node.port), "the S3 port refuses connections")
        self.assertIsNone(node.process.poll(), "the node exited with an upload running")
        sock.sendall(body[1024 * 1024:])
        reply = read_until(sock, b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), reply)
        self.assertEqual(node.process.wait(DEADLINE_SECONDS), 0)
        self.assertIn("letting requests in progress finish", node.log())

        again = NodeProcess(self, data_dir=node.data_dir).start()
        got = again.client().get_object(Bucket="drain", Key="slow")["Body"].read()
        self.assertEqual(got, body)

    def test_the_node_leaves_its_cluster_after_the_drain(self):
        """In a cluster of two, the stopping node stays a member while its
        upload finishes (the upload needs its peer), then leaves: the
        other records it as left, not dead."""
        env = {"Z4_CLUSTER_KEY": "lifecycle-test-cluster-secret"}
        a = NodeProcess(self, env=env, args=["--id", "node-a"]).start()
        b = NodeProcess(self, env=env, args=["--id", "node-b", "--join",
                                             f"127.0.0.1:{a.gossip_port}"]).start()
        wait_for(lambda: member_state(b, "node-a") == "alive", "node-b sees node-a")
        wait_for(lambda: member_state(a, "node-b") == "alive", "node-a sees node-b")
        a.client().create_bucket(Bucket="drain")
        body = os.urandom(2 * 1024 * 1024)
        sock = self.start_upload(a, "replicated", body, 1000)
        a.process.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(a.port), "node-a's S3 port refuses connections")
        self.assertEqual(member_state(b, "node-a"), "alive", "left before its upload finished")
        sock.sendall(body[1000:])
        reply = read_until(sock, b"\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), reply)
        self.assertEqual(a.process.wait(DEADLINE_SECONDS), 0)
        wait_for(lambda: member_state(b, "node-a") == "left", "node-b records node-a left")

    def test_stop_timeout_cuts_a_stalled_upload(self):
        """An upload that does not finish within --stop-timeout is cut and
        the node exits 0 all the same."""
        node = NodeProcess(self, args=["--stop-timeout", "1"]).start()
        node.client().create_bucket(Bucket="drain")
        sock = self.start_upload(node, "stalled", b"x" * 100000, 1000)
        node.process.send_signal(signal.SIGTERM)
        self.assertEqual(node.process.wait(DEADLINE_SECONDS), 0)
        self.assertIn("cut 1 request(s) still running after --stop-timeout 1", node.log())
        try:
            answer = read_until(sock, b"\r\n\r\n")
        except ConnectionResetError:
            answer = b""
        self.assertEqual(answer, b"", "a cut upload got an answer")


class StopTimeoutOptionTests(unittest.SynchronousTestCase):
    def test_stop_timeout_is_seconds_not_below_zero(self):
        for bad in ("-1", "nan", "soon"):
            with self.assertRaises(usage.UsageError, msg=bad):
                Options().parseOptions(["--stop-timeout", bad])
        options = Options()
        options.parseOptions(["--stop-timeout", "0"])
        self.assertEqual(options["stop-timeout"], 0)


class DrainTests(unittest.SynchronousTestCase):
    """NodeSite.drain on a Clock: idle connections close at once, busy
    ones when their request finishes, stuck ones at the timeout."""

    def setUp(self):
        self.clock = Clock()
        self.resource = RecordingResource()
        self.site = NodeSite(self.resource, timeout=None, reactor=self.clock)

    def connect(self):
        channel, transport = connect(self.resource, self.site)
        # StringTransport does not call back; a real transport would.
        transport.loseConnection = lambda: (setattr(transport, "disconnecting", True),
                                            channel.connectionLost(Failure(ConnectionDone())))
        return channel, transport

    def upload(self, channel, sent):
        channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
                             + sent)

    def test_idle_connections_close_at_once(self):
        _, transport = self.connect()
        result = []
        Deferred.fromCoroutine(self.site.drain(self.clock, 30)).addCallback(result.append)
        self.assertEqual(result, [0])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.channels, set())

    def test_request_in_progress_finishes_then_its_connection_closes(self):
        busy, busy_transport = self.connect()
        self.upload(busy, b"12345")
        result = []
        Deferred.fromCoroutine(self.site.drain(self.clock, 30)).addCallback(result.append)
        self.clock.advance(29)
        self.assertEqual(result, [])
        self.assertFalse(busy_transport.disconnecting)
        busy.dataReceived(b"67890")
        self.assertEqual(self.resource.finished, [b"1234567890"])
        self.assertIn(b"ok", busy_transport.value())
        self.clock.advance(self.site.drain_poll_seconds)
        self.assertEqual(result, [0])
        self.assertTrue(busy_transport.disconnecting)

    def test_requests_still_running_at_the_timeout_are_cut(self):
        stuck, transport = self.connect()
        self.upload(stuck, b"1")
        result = []
        Deferred.fromCoroutine(self.site.drain(self.clock, 30)).addCallback(result.append)
        self.clock.advance(29.9)
        self.assertEqual(result, [])
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertEqual(result, [1])
        self.assertTrue(transport.disconnected, "aborted")
