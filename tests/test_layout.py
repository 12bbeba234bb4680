"""The ring is a layout, not liveness: which members own data as members
die, come back, leave and are forgotten (ClusterService on a fake clock)."""

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from z4node.cluster.members import Member
from z4node.cluster.ring import bucket_key
from z4node.cluster.service import ClusterService

SECRET = "layout-test-cluster-secret"
KEYS = [bucket_key(f"bucket-{i}") for i in range(300)]


def member(i, incarnation=100):
    host = f"127.0.20.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), incarnation=incarnation)


class LayoutTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.cluster = ClusterService(self.clock, random.Random(1), SECRET, member(1),
                                      "127.0.0.1")
        self.cluster.membership.merge_state(
            {"from": "node-2", "members": [member(i).to_json() for i in (2, 3, 4)]})
        self.placement = {k: self.cluster.owners(k) for k in KEYS}

    def kill(self, member_id):
        self.cluster.membership._dead({"id": member_id, "inc": 100, "from": "node-2"})

    def test_a_death_moves_nothing(self):
        fingerprint = self.cluster.ring.fingerprint()
        self.kill("node-4")
        self.assertFalse(self.cluster.is_alive("node-4"))
        self.assertEqual(self.cluster.ring.fingerprint(), fingerprint)
        self.assertEqual({k: self.cluster.owners(k) for k in KEYS}, self.placement)
        self.assertTrue(any("node-4" in owners for owners in self.placement.values()))

    def test_a_restart_moves_nothing(self):
        self.kill("node-4")
        self.cluster.membership._alive(dict(member(4, incarnation=200).alive_message()))
        self.assertTrue(self.cluster.is_alive("node-4"))
        self.assertEqual({k: self.cluster.owners(k) for k in KEYS}, self.placement)

    def test_a_member_dead_past_retention_leaves_the_layout(self):
        self.kill("node-4")
        self.clock.advance(self.cluster.membership.dead_retention - 1)
        self.assertIn("node-4", self.cluster.ring)
        self.clock.advance(2)
        self.assertNotIn("node-4", self.cluster.ring)
        self.assertEqual(len(self.cluster.ring), 3)
        # Only the keys node-4 owned changed owners.
        for key, owners in self.placement.items():
            if "node-4" not in owners:
                self.assertEqual(self.cluster.owners(key), owners)

    def test_a_graceful_leave_leaves_the_layout_at_once(self):
        self.cluster.membership._dead({"id": "node-4", "inc": 100, "from": "node-4"})
        self.assertNotIn("node-4", self.cluster.ring)

    def test_subscribers_see_the_new_ring(self):
        seen = []
        self.cluster.subscribe(lambda event: seen.append(
            (event.kind, "node-4" in self.cluster.ring)))
        self.kill("node-4")
        self.clock.advance(self.cluster.membership.dead_retention + 1)
        self.assertEqual(seen, [("dead", True), ("forgotten", False)])
