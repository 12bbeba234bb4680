"""Tests for the /_z4/ endpoints (in memory, through treq's StubTreq) and
the sealed push/pull RPC."""

import json
import random

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from z4node.cluster.members import Member, State
from z4node.cluster.rpc import open_json, seal_json
from z4node.cluster.sealing import Sealer, derive_key
from z4node.cluster.service import ClusterService
from z4node.testing.dht import MemoryDHT
from z4node.web.status import make_z4_resource

SECRET = "web-test-cluster-secret"
CHUNK = "ab" * 32


def member(i):
    host = f"127.0.10.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), zone=f"z{i % 2}",
                  incarnation=100)


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
        self.http = StubTreq(make_z4_resource(
            self.clock, {"id": "node-1", "started": 1_700_000_000,
                         "jobs": lambda: self.jobs}, self.cluster))

    def get(self, path, code=200):
        response = self.successResultOf(self.http.get(f"http://node/{path}"))
        self.assertEqual(response.code, code)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return json.loads(self.successResultOf(response.content()))

    def test_ping(self):
        self.assertEqual(self.get("ping"), {"id": "node-1", "version": "0.1.0", "uptime": 42.0})

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
        view = self.get("ring?key=photos/cat.jpg&n=2")
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


class PushPullResourceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.cluster = ClusterService(self.clock, random.Random(1), SECRET, member(1),
                                      "127.0.0.1")
        self.http = StubTreq(make_z4_resource(
            self.clock, {"id": "node-1", "started": 0}, self.cluster))
        self.peer_sealer = Sealer(derive_key(SECRET, b"rpc"), self.clock)

    def post(self, body):
        response = self.successResultOf(
            self.http.post("http://node/rpc/pushpull", data=body))
        return response.code, self.successResultOf(response.content())

    def request(self, **overrides):
        body = {"op": "pushpull", "to": "node-1", "sender": "node-2",
                "state": {"from": "node-2", "members": [member(2).to_json()]}}
        body.update(overrides)
        return body

    def test_exchange_merges_and_answers_sealed(self):
        code, content = self.post(seal_json(self.peer_sealer, self.request()))
        self.assertEqual(code, 200)
        reply = open_json(self.peer_sealer, content)
        self.assertEqual(reply["op"], "pushpull-reply")
        self.assertEqual({m["id"] for m in reply["state"]["members"]}, {"node-1", "node-2"})
        self.assertIs(self.cluster.membership.get("node-2").state, State.ALIVE)

    def test_wrong_secret_refused_and_counted(self):
        other = Sealer(derive_key("another cluster secret!", b"rpc"), self.clock)
        code, content = self.post(seal_json(other, self.request()))
        self.assertEqual((code, content), (403, b""))
        self.assertIsNone(self.cluster.membership.get("node-2"))
        self.assertEqual(self.cluster.rpc_sealer.dropped["forged"], 1)

    def test_replay_refused(self):
        body = seal_json(self.peer_sealer, self.request())
        self.assertEqual(self.post(body)[0], 200)
        self.assertEqual(self.post(body)[0], 403)
        self.assertEqual(self.cluster.rpc_sealer.dropped["replayed"], 1)

    def test_request_for_another_node_refused(self):
        code, _ = self.post(seal_json(self.peer_sealer, self.request(to="node-3")))
        self.assertEqual(code, 403)

    def test_gossip_packet_is_not_an_rpc(self):
        gossip = Sealer(derive_key(SECRET, b"gossip"), self.clock)
        self.assertEqual(self.post(seal_json(gossip, self.request()))[0], 403)

    def test_malformed_state_is_a_400(self):
        code, _ = self.post(seal_json(self.peer_sealer, self.request(state=None)))
        self.assertEqual(code, 400)
