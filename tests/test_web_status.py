"""Tests for the /_z4/ endpoints (in memory, through treq's StubTreq and
the node's own S3Site)."""

import datetime
import json
import random
from types import SimpleNamespace

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
import twisted.web.http
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.s3http import signing_clock
from z4node.cluster.members import Member
from z4node.cluster.service import ClusterService
from z4node.s3.http import S3Site
from z4node.testing.dht import MemoryDHT
from z4node.web.status import make_z4_resource

SECRET = "web-test-cluster-secret"
CHUNK = "ab" * 32
ADMIN = ("AKIDZ4ADMIN", "admin-secret-0123456789")
USER = ("AKIDZ4USER", "user-secret-0123456789")


def member(i):
    host = f"127.0.10.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), zone=f"z{i % 2}",
                  incarnation=100)


class Keys:
    """The two methods of SystemTables that AdminAccess asks."""

    def __init__(self):
        self._keys = {ADMIN[0]: SimpleNamespace(secret=ADMIN[1], is_admin=True),
                      USER[0]: SimpleNamespace(secret=USER[1], is_admin=False)}

    def key_by_id(self, access_key_id):
        return self._keys.get(access_key_id)

    def secret_for(self, access_key_id):
        key = self._keys.get(access_key_id)
        return key.secret if key is not None else None


def site_client(resource, clock):
    """StubTreq serving ``resource`` through the node's S3Site (which
    streams request bodies) instead of twisted.web's plain Site."""
    http = StubTreq(resource)
    agent = http._agent
    agent._serverFactory = S3Site(resource, reactor=agent._memoryReactor)
    return http


def signed(clock, method, url, key=ADMIN):
    """Headers for ``url`` signed by botocore at the clock's time."""
    request = AWSRequest(method=method, url=url, data=b"")
    when = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
    with signing_clock(when.replace(tzinfo=None)):
        S3SigV4Auth(Credentials(*key), "s3", "us-east-1").add_auth(request)
    return {name: [value] for name, value in request.headers.items()}


class Z4ResourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.cluster = ClusterService(self.clock, random.Random(1), SECRET, member(1),
                                      "127.0.0.1")
        self.cluster.dht = MemoryDHT(self.clock).directory("node-1")
        state = {"from": "node-2", "members": [member(i).to_json() for i in (2, 3, 4)]}
        self.cluster.membership.merge_state(state)
        self.clock.advance(42)
        self.jobs = {"gc": {"runs": 3, "failures": 1, "last_failure": None}}
        self.http = site_client(make_z4_resource(
            self.clock, {"id": "node-1", "started": 1_700_000_000,
                         "jobs": lambda: self.jobs}, self.cluster, Keys()),
            self.clock)

    def get(self, path, code=200, key=ADMIN):
        url = f"http://node/{path}"
        headers = signed(self.clock, "GET", url, key) if key else None
        response = self.successResultOf(self.http.get(url, headers=headers))
        if code is not None:
            self.assertEqual(response.code, code)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return json.loads(self.successResultOf(response.content()))

    def test_ping(self):
        self.assertEqual(self.get("ping", key=None),
                         {"id": "node-1", "version": "0.1.0", "uptime": 42.0})

    def test_detailed_views_need_an_admin_key(self):
        crawls = []
        self.cluster.dht.providers = crawls.append
        for path in ("peers", "ring", "ring?key=a", f"providers/{CHUNK}", "status"):
            self.assertIn("admin key", self.get(path, code=403, key=None)["error"], path)
            self.assertIn("admin keys only", self.get(path, code=403, key=USER)["error"])
            wrong = (ADMIN[0], "not-the-secret-0123456789")
            self.assertIn("SignatureDoesNotMatch", self.get(path, code=403, key=wrong)["error"])
        self.assertEqual(crawls, [], "no DHT crawl for a refused request")

    def test_provider_lookups_are_cached_and_rate_limited(self):
        crawls = []
        real = self.cluster.dht.providers

        def counting(chunk_hash):
            crawls.append(chunk_hash)
            return real(chunk_hash)
        self.cluster.dht.providers = counting
        self.cluster.dht.provide(CHUNK)
        for _ in range(5):
            self.assertEqual(self.get(f"providers/{CHUNK}")["providers"], ["node-1"])
        self.assertEqual(len(crawls), 1, "one crawl, then the cached answer")
        self.clock.advance(11)
        self.get(f"providers/{CHUNK}")
        self.assertEqual(len(crawls), 2, "the answer expires")
        # Distinct hashes each cost a crawl: past the burst, 503.
        codes = [self.get(f"providers/{i:064x}", code=None) for i in range(20)]
        self.assertEqual(len(crawls), 2 + 9)
        self.assertEqual(sum("too many" in c.get("error", "") for c in codes), 11)

    def test_a_crawl_under_way_is_shared(self):
        pending = Deferred()
        crawls = []
        self.cluster.dht.providers = lambda h: crawls.append(h) or pending
        url = f"http://node/providers/{CHUNK}"
        first = self.http.get(url, headers=signed(self.clock, "GET", url))
        second = self.http.get(url, headers=signed(self.clock, "GET", url))
        self.assertEqual(len(crawls), 1)
        pending.callback({"node-3"})
        self.http.flush()
        for d in (first, second):
            body = json.loads(self.successResultOf(self.successResultOf(d).content()))
            self.assertEqual(body["providers"], ["node-3"])

    def test_head_is_answered_where_get_is_and_405_elsewhere(self):
        for path, code in (("providers", 405), ("ping", 200)):
            response = self.successResultOf(self.http.head(f"http://node/{path}"))
            self.assertEqual(response.code, code, path)

    def test_peers_lists_every_member_with_state(self):
        self.cluster.membership._dead({"id": "node-4", "inc": 100, "from": "node-2"})
        peers = self.get("peers")
        by_id = {m["id"]: m for m in peers["members"]}
        self.assertEqual(sorted(by_id), ["node-1", "node-2", "node-3", "node-4"])
        self.assertEqual(by_id["node-4"]["state"], "dead")
        self.assertTrue(by_id["node-1"]["self"])
        self.assertEqual(by_id["node-2"]["s3"], ["127.0.10.2", 9670])
        self.assertEqual(by_id["node-2"]["gossip"], ["127.0.10.2", 9671])
        self.assertEqual(by_id["node-2"]["dht"], ["127.0.10.2", 9672])
        self.assertEqual(by_id["node-2"]["incarnation"], 100)
        self.assertEqual(by_id["node-2"]["zone"], "z0")
        self.assertIsNone(by_id["node-2"]["last_heard_ago"])

    def test_ring_summary_and_key(self):
        summary = self.get("ring")
        self.assertEqual(summary["members"], 4)
        self.assertEqual(summary["zones"], ["z0", "z1"])
        self.assertEqual(summary["fingerprint"], self.cluster.ring.fingerprint())
        view = self.get("ring?key=photos%2Fcat.jpg&n=2")
        self.assertEqual([o["id"] for o in view["owners"]],
                         self.cluster.owners(b"photos/cat.jpg", 2))
        self.assertEqual(len({o["zone"] for o in view["owners"]}), 2)

    def test_ring_rejects_bad_n(self):
        self.assertIn("error", self.get("ring?key=a&n=99", code=400))
        self.assertIn("error", self.get("ring?key=a&n=x", code=400))

    def test_ring_follows_the_layout(self):
        # A death keeps the member's ranges; leaving gives them up.
        self.cluster.membership._dead({"id": "node-4", "inc": 100, "from": "node-2"})
        self.assertEqual(self.get("ring")["members"], 4)
        self.cluster.membership._dead({"id": "node-3", "inc": 100, "from": "node-3"})
        self.assertEqual(self.get("ring")["members"], 3)

    def test_providers(self):
        self.cluster.dht.provide(CHUNK)
        self.assertEqual(self.get(f"providers/{CHUNK}"), {"hash": CHUNK, "providers": ["node-1"]})
        self.assertEqual(self.get(f"providers/{'cd' * 32}")["providers"], [])
        self.assertIn("error", self.get("providers/not-a-hash", code=400))

    def test_status_has_counters_and_no_secret(self):
        status = self.get("status")
        self.assertEqual(status["id"], "node-1")
        self.assertEqual(status["membership"]["members"]["alive"], 4)
        self.assertIn("probes", status["membership"]["counters"])
        self.assertIn("dropped", status["membership"]["packets"])
        self.assertEqual(status["ring"]["members"], 4)
        self.assertEqual(status["dht"]["own_records"], 0)
        self.assertNotIn(SECRET, json.dumps(status))

    def test_status_shows_background_jobs_failures(self):
        self.assertEqual(self.get("status")["jobs"]["gc"]["failures"], 1)

    def test_post_not_allowed_on_status(self):
        response = self.successResultOf(self.http.post("http://node/status", data=b""))
        self.assertEqual(response.code, 405)


class BodyTests(SynchronousTestCase):
    """No /_z4/ resource takes a body: one sent anyway is answered on the
    headers, never spooled to disk, and the connection is closed."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.cluster = ClusterService(self.clock, random.Random(1), SECRET, member(1),
                                      "127.0.0.1")

    def raw(self, data):
        """Feed ``data`` to a fresh connection of the node's site; the
        transport, and the request the channel made."""
        # What twisted.web would spool a body to: it must never be asked.
        self.spooled = []
        self.patch(twisted.web.http, "_getContentFile", self.spooled.append)
        site = S3Site(make_z4_resource(self.clock, {"id": "node-1", "started": 0},
                                       self.cluster, Keys()), reactor=self.clock)
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return transport, channel

    def test_a_large_body_is_answered_on_its_headers(self):
        # 200 MiB announced, unauthenticated: answered before a byte of it
        # is read, nothing spooled, the connection closed.
        transport, channel = self.raw(
            b"POST /status HTTP/1.1\r\nHost: n\r\nContent-Length: %d\r\n\r\n"
            % (200 * 1024 * 1024) + b"x" * 1000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "))
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.spooled, [])

    def test_a_chunked_body_is_answered_without_reading_it(self):
        transport, channel = self.raw(
            b"POST /status HTTP/1.1\r\nHost: n\r\nTransfer-Encoding: chunked\r\n\r\n")
        request = channel.requests[0] if channel.requests else None
        piece = b"x" * 65536
        sent = 0
        while not transport.disconnecting and sent < 64 * len(piece):
            channel.dataReceived(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "), transport.value()[:80])
        self.assertTrue(transport.disconnecting)
        if request is not None:
            self.assertLessEqual(request.body.received, len(piece))
        self.assertEqual(self.spooled, [])
