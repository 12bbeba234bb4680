"""Tests for z4node.replication.everywhere and the system tables on top of
it: keys, buckets and grants on every node, on fake clusters in one process
(calls go straight to the other node's handlers, on a fake clock)."""

import random

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests import fakecluster
from z4node.cluster.channel import CallError
from z4node.cluster.members import IN_LAYOUT
from z4node.hlc import HybridLogicalClock
from z4node.objects.errors import ObjectError
from z4node.objects.system import SystemTables
from z4node.replication.everywhere import EverywhereTables
from tests.test_authorization import MemoryMeta


class FakeNet(fakecluster.FakeNet):
    """A FakeNet whose nodes each run system tables over EverywhereTables."""

    def __init__(self, count):
        fakecluster.FakeNet.__init__(self, count, self._node)

    def _node(self, cluster):
        system = SystemTables(MemoryMeta(), HybridLogicalClock(self.clock), self.clock,
                              random_bytes=random.Random(cluster.local.id).randbytes)
        everywhere = EverywhereTables(self.clock, cluster, random.Random(0))
        system.replicate_with(everywhere)
        everywhere.startService()
        return system, everywhere

    def system(self, member_id):
        return self.nodes[member_id][0]


def run(d):
    return defer.ensureDeferred(d)


class EverywhereTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNet(3)

    def tearDown(self):
        for _, everywhere in self.net.nodes.values():
            everywhere.stopService()

    def test_a_key_made_on_one_node_is_on_every_node(self):
        key = self.successResultOf(run(self.net.system("n0").create_key("alice")))
        for node in ("n1", "n2"):
            self.assertEqual(self.net.system(node).secret_for(key.access_key_id), key.secret)

    def test_buckets_settings_grants_and_deletes_replicate(self):
        system = self.net.system("n1")
        owner = self.successResultOf(run(system.create_key("owner")))
        self.successResultOf(run(system.create_bucket("photos", owner)))
        self.successResultOf(run(system.update_bucket_settings(
            "photos", lambda s: s.update(versioning="Enabled"))))
        other = self.net.system("n2")
        self.assertEqual(other.bucket("photos").settings, {"versioning": "Enabled"})
        self.assertTrue(other.grant("photos", owner.access_key_id).can_own)
        self.successResultOf(run(system.delete_bucket("photos", lambda c: None)))
        self.assertIsNone(other.bucket("photos"))
        self.assertFalse(other.grant("photos", owner.access_key_id).can_own)

    def test_one_node_down_still_reaches_quorum_and_catches_up_on_return(self):
        self.net.kill("n2")
        key = self.successResultOf(run(self.net.system("n0").create_key("bob")))
        self.assertIsNone(self.net.system("n2").key_by_id(key.access_key_id))
        self.net.revive("n2")
        self.net.clock.advance(EverywhereTables.rejoin_delay)
        self.assertEqual(self.net.system("n2").secret_for(key.access_key_id), key.secret)

    def test_two_of_three_down_is_service_unavailable(self):
        self.net.kill("n1")
        self.net.kill("n2")
        failure = self.failureResultOf(run(self.net.system("n0").create_key("carol")),
                                       ObjectError)
        self.assertEqual(failure.value.code, "ServiceUnavailable")
        self.assertEqual(self.net.nodes["n0"][1].counters["quorum_failures"], 1)
        # The change stays where it landed and spreads once peers are back.
        self.net.revive("n1")
        self.net.clock.advance(EverywhereTables.rejoin_delay)
        self.assertIsNotNone(self.net.system("n1").key_by_name("carol"))

    def test_periodic_sync_repairs_a_missed_write_and_survives_failures(self):
        self.net.unreachable.add("n2")
        key = self.successResultOf(run(self.net.system("n0").create_key("dave")))
        self.assertIsNone(self.net.system("n2").key_by_id(key.access_key_id))
        # Periods in which n2 cannot be reached fail and are counted...
        for _ in range(4):
            self.net.clock.advance(EverywhereTables.sync_interval)
        failures = sum(e.counters["sync_failures"] for _, e in self.net.nodes.values())
        self.assertGreater(failures, 0)
        # ...and the loops keep running: once it can be reached, it converges.
        self.net.unreachable.clear()
        for _ in range(20):
            self.net.clock.advance(EverywhereTables.sync_interval)
            if self.net.system("n2").key_by_id(key.access_key_id) is not None:
                break
        self.assertEqual(self.net.system("n2").secret_for(key.access_key_id), key.secret)
        digests = {e.digests()["keys"] for _, e in self.net.nodes.values()}
        self.assertEqual(len(digests), 1)

    def test_a_sync_tick_that_raises_is_counted_and_the_loop_runs_on(self):
        everywhere = self.net.nodes["n0"][1]
        membership = self.net.clusters["n0"].membership
        real = membership.members
        calls = []

        def broken(*args):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("membership hiccup")
            return real(*args)
        membership.members = broken
        for _ in range(3):
            self.net.clock.advance(EverywhereTables.sync_interval)
        job = everywhere.status()["sync_job"]
        self.assertEqual((job["runs"], job["failures"]), (3, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertGreater(everywhere.counters["syncs"], 0)

    def test_an_older_entry_arriving_late_changes_nothing(self):
        system = self.net.system("n0")
        owner = self.successResultOf(run(system.create_key("erin")))
        self.successResultOf(run(system.create_bucket("docs", owner)))
        old = system.bucket("docs")
        self.successResultOf(run(system.update_bucket_settings(
            "docs", lambda s: s.update(policy="new"))))
        everywhere = self.net.nodes["n1"][1]
        stale = dict(old.__dict__)
        self.successResultOf(run(everywhere._serve_apply("n0", {
            "table": "buckets", "entries": [stale]}, None)))
        self.assertEqual(self.net.system("n1").bucket("docs").settings, {"policy": "new"})

    def test_a_tombstone_wins_over_the_entry_it_deletes_in_any_order(self):
        system = self.net.system("n0")
        key = self.successResultOf(run(system.create_key("frank")))
        live = dict(self.net.system("n0")._keys[key.access_key_id].__dict__)
        self.successResultOf(run(system.delete_key("frank")))
        dead = dict(self.net.system("n0")._keys[key.access_key_id].__dict__)
        for order in ([live, dead], [dead, live]):
            fresh = FakeNet(1)
            everywhere = fresh.nodes["n0"][1]
            for entry in order:
                self.successResultOf(run(everywhere._serve_apply(
                    "x", {"table": "keys", "entries": [entry]}, None)))
            self.assertIsNone(fresh.system("n0").key_by_id(key.access_key_id))
            everywhere.stopService()

    def test_a_quorum_counts_dead_members_of_the_layout(self):
        everywhere = self.net.nodes["n0"][1]
        self.assertEqual(everywhere.quorum(), 2)
        self.net.kill("n1")
        self.assertEqual(len(self.net.clusters["n0"].membership.members(IN_LAYOUT)), 3)
        self.assertEqual(everywhere.quorum(), 2)

    def test_a_cluster_of_one_needs_no_peer(self):
        single = FakeNet(1)
        key = self.successResultOf(run(single.system("n0").create_key("solo")))
        self.assertEqual(single.calls, [])
        self.assertIsNotNone(single.system("n0").key_by_id(key.access_key_id))
        single.nodes["n0"][1].stopService()

    def test_unknown_table_is_refused(self):
        everywhere = self.net.nodes["n0"][1]
        failure = self.failureResultOf(run(everywhere._serve_apply(
            "n1", {"table": "nope", "entries": []}, None)), CallError)
        self.assertEqual(failure.value.code, "NoSuchTable")

    def test_same_name_keys_made_apart_resolve_to_the_oldest_everywhere(self):
        net = FakeNet(2)
        # Before they met, each was a cluster of one.
        n1 = net.members.pop("n1")
        first = self.successResultOf(run(net.system("n0").create_key("admin")))
        net.clock.advance(1)
        net.members["n1"] = n1
        n0 = net.members.pop("n0")
        second = self.successResultOf(run(net.system("n1").create_key("admin")))
        net.members["n0"] = n0
        self.assertNotEqual(first.access_key_id, second.access_key_id)
        self.successResultOf(run(net.nodes["n0"][1].sync_with("n1")))
        for node in ("n0", "n1"):
            self.assertEqual(net.system(node).key_by_name("admin").access_key_id,
                             first.access_key_id)
            # Both keys still sign requests.
            self.assertIsNotNone(net.system(node).key_by_id(second.access_key_id))
        for _, everywhere in net.nodes.values():
            everywhere.stopService()




class RefusalTests(SynchronousTestCase):
    def test_an_entry_from_too_far_in_the_future_is_refused_and_counted(self):
        from z4node.hlc import from_seconds
        net = FakeNet(1)
        everywhere = net.nodes["n0"][1]
        ahead = from_seconds(net.clock.seconds() + 3600)
        entry = {"access_key_id": "Z4FUTURE", "name": "future", "secret": "s",
                 "user_id": "u", "is_admin": True, "created": 0.0, "hlc": ahead,
                 "deleted": False}
        failure = self.failureResultOf(run(everywhere._serve_apply(
            "n9", {"table": "keys", "entries": [entry]}, None)), CallError)
        self.assertEqual(failure.value.code, "BadEntry")
        self.assertIsNone(net.system("n0").key_by_id("Z4FUTURE"))
        self.assertEqual(everywhere.counters["refused"], 1)
        everywhere.stopService()
