"""Unit tests of every SWIM and Lifeguard rule, on a fake clock and network."""

import json
import math

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.swimcluster import SimCluster, address_of
from z4node.cluster.broadcasts import BroadcastQueue
from z4node.cluster.lifeguard import LocalHealth, Suspicion
from z4node.cluster.members import Member, State
from z4node.cluster.membership import Membership
from z4node.cluster.sealing import SEAL_OVERHEAD


def ids(n):
    return [f"n{i:03d}" for i in range(n)]


class JoinTests(SynchronousTestCase):
    def test_nodes_join_through_one_member(self):
        c = SimCluster(seed=1)
        c.join_all(5)
        self.assertIsNotNone(c.run_until(c.converged, 10))
        self.assertTrue(all(node.joined for node in list(c.nodes.values())[1:]))
        joined = {(observer, m) for _, observer, kind, m in c.events if kind == "joined"}
        self.assertIn(("n000", "n004"), joined)
        self.assertIn(("n004", "n003"), joined)

    def test_join_retries_until_the_peer_is_up(self):
        c = SimCluster(seed=2)
        late = c.make_node(1)
        late.join([address_of(0)])
        c.run(5)
        self.assertFalse(late.joined)
        c.make_node(0)
        self.assertIsNotNone(c.run_until(c.converged, 2 * Membership.join_retry_interval + 1))

    def test_wrong_secret_is_never_admitted(self):
        c = SimCluster(seed=3)
        c.join_all(3)
        c.run_until(c.converged, 10)
        intruder = c.make_node(9, secret="some other cluster's secret")
        intruder.join([address_of(0)])
        c.run(30)
        self.assertFalse(intruder.joined)
        for node_id in ids(3):
            self.assertIsNone(c.view(node_id, "n009"))
        self.assertGreater(c.nodes["n000"]._sealer.dropped["forged"], 0)
        self.assertEqual([m.id for m in intruder.members()], ["n009"])


class ProbeTests(SynchronousTestCase):
    def test_healthy_cluster_stays_quiet(self):
        c = SimCluster(seed=4)
        c.join_all(6)
        c.run(120)
        self.assertTrue(c.converged())
        for node in c.nodes.values():
            self.assertEqual(node.counters["suspicions"], 0)
            self.assertEqual(node.health.score, 0)
            self.assertGreater(node.counters["probes"], 100)

    def test_randomized_round_robin_probes_each_member_once_per_pass(self):
        c = SimCluster(seed=5)
        nodes = c.seed_all(6)
        a = nodes[0]
        others = set(ids(6)[1:])
        first = [a._next_target().id for _ in range(5)]
        second = [a._next_target().id for _ in range(5)]
        self.assertEqual(set(first), others)
        self.assertEqual(set(second), others)
        self.assertNotEqual(first, second)  # reshuffled (seeded, so stable)

    def test_new_member_probed_within_the_current_pass(self):
        c = SimCluster(seed=6)
        nodes = c.seed_all(4)
        a = nodes[0]
        a._next_target()
        a._alive(Member("late", ("127.9.9.9", 1), 2, ("127.9.9.9", 3), incarnation=1)
                 .alive_message())
        rest = [a._next_target().id for _ in range(3)]
        self.assertIn("late", rest)

    def test_indirect_probe_saves_a_member_we_cannot_reach(self):
        c = SimCluster(seed=7)
        c.seed_all(5)
        a, b = address_of(0), address_of(1)
        c.net.partition([a], [b])
        c.run(60)
        self.assertIs(c.view("n000", "n001"), State.ALIVE)
        self.assertIs(c.view("n001", "n000"), State.ALIVE)
        self.assertGreater(c.nodes["n000"].counters["indirect_probes"], 0)
        self.assertEqual(c.nodes["n000"].counters["suspicions"], 0)

    def test_one_way_partition_is_bridged_by_indirect_probes(self):
        c = SimCluster(seed=8)
        c.seed_all(5)
        # n001 hears n000 but its answers to n000 are lost.
        c.net.block(address_of(1), address_of(0))
        c.run(60)
        self.assertTrue(c.converged())
        self.assertGreater(c.nodes["n000"].counters["indirect_probes"], 0)

    def test_ping_for_another_id_is_not_acked(self):
        # A node restarted with a new id at an old address must not vouch
        # for the old one.
        c = SimCluster(seed=9)
        a, b = c.seed_all(2)
        b_member = a._members["n001"]
        b_member.id = "someone-else"
        a._members = {"n000": a.local, "someone-else": b_member}
        a._probe_order, a._probe_index = [], 0
        c.run(3)
        self.assertGreater(a.counters["probe_failures"], 0)


class SuspicionTests(SynchronousTestCase):
    def test_killed_member_is_suspected_then_dead_everywhere(self):
        c = SimCluster(seed=10)
        c.seed_all(5)
        c.kill("n004")
        took = c.run_until(lambda: c.all_see("n004", State.DEAD), 30)
        self.assertIsNotNone(took)
        kinds = [kind for _, observer, kind, m in c.events if observer == "n000" and m == "n004"]
        self.assertEqual(kinds, ["suspect", "dead"])
        # 5 members: minimum suspicion 4 s, maximum 24 s; confirmations from
        # the other three bring it well under the maximum.
        self.assertLess(took, 15)

    def test_suspicion_timeout_shrinks_with_confirmations(self):
        clock = Clock()
        fired = []
        s = Suspicion(clock, "a", k=2, minimum=4.0, maximum=24.0,
                      on_timeout=lambda: fired.append(clock.seconds()))
        self.assertEqual(s.timeout(), 24.0)
        clock.advance(1)
        self.assertTrue(s.confirm("b"))
        self.assertFalse(s.confirm("b"))  # not independent
        self.assertAlmostEqual(s.timeout(), 24 - 20 * math.log(2) / math.log(3))
        self.assertTrue(s.confirm("c"))
        self.assertEqual(s.timeout(), 4.0)
        self.assertFalse(s.confirm("d"))  # k reached
        clock.advance(3)
        self.assertEqual(fired, [4.0])

    def test_confirmation_after_minimum_fires_at_once(self):
        clock = Clock()
        fired = []
        s = Suspicion(clock, "a", 2, 4.0, 24.0, lambda: fired.append(clock.seconds()))
        clock.advance(10)
        s.confirm("b")
        s.confirm("c")
        clock.advance(0)
        self.assertEqual(fired, [10.0])

    def test_no_confirmations_expected_in_tiny_cluster(self):
        clock = Clock()
        s = Suspicion(clock, "a", 0, 4.0, 24.0, lambda: None)
        self.assertEqual(s.timeout(), 4.0)

    def test_bounds_scale_with_log_n(self):
        c = SimCluster(seed=11)
        small = c.seed_all(5)[0]
        self.assertEqual(small.suspicion_bounds(), (4.0, 24.0))
        big = SimCluster(seed=11).seed_all(100)[0]
        self.assertEqual(big.suspicion_bounds(), (8.0, 48.0))

    def test_refutation_keeps_a_stalled_member(self):
        c = SimCluster(seed=12)
        c.seed_all(5)
        before = c.nodes["n002"].local.incarnation
        c.stall("n002", 3)
        c.run(3.2)
        self.assertIn(State.SUSPECT, c.states_of("n002").values())
        c.run(30)
        self.assertTrue(c.all_see("n002", State.ALIVE))
        self.assertGreater(c.nodes["n002"].local.incarnation, before)
        self.assertGreater(c.nodes["n002"].counters["refutations"], 0)
        kinds = {kind for _, _, kind, m in c.events if m == "n002"}
        self.assertEqual(kinds, {"suspect", "alive"})

    def test_stalled_node_accuses_nobody(self):
        c = SimCluster(seed=13)
        c.seed_all(5)
        c.run(1.01)  # past the first probe tick: a probe is always in flight
        c.stall("n002", 3)
        c.run(30)
        stalled = c.nodes["n002"]
        self.assertEqual(stalled.counters["suspicions"], 0)
        self.assertGreater(stalled.counters["stalls_detected"], 0)
        for other in ids(5):
            if other != "n002":
                self.assertIs(c.view("n002", other), State.ALIVE)

    def test_buddy_system_tells_the_suspect_in_the_probe(self):
        c = SimCluster(seed=14)
        a, b = c.seed_all(2)
        a._suspect({"id": "n001", "inc": b.local.incarnation, "from": "n000"})
        a._broadcasts._items.clear()  # only the probe itself can tell b
        before = b.local.incarnation
        c.run(2.5)
        self.assertGreater(b.local.incarnation, before)
        self.assertIs(c.view("n000", "n001"), State.ALIVE)

    def test_hearing_a_suspicion_probes_the_suspect_next(self):
        c = SimCluster(seed=27)
        a = c.seed_all(5)[0]
        a._next_target()
        a._suspect({"id": "n004", "inc": a.get("n004").incarnation, "from": "n001"})
        self.assertEqual(a._next_target().id, "n004")

    def test_own_suspicion_does_not_reorder_probes(self):
        c = SimCluster(seed=28)
        a = c.seed_all(5)[0]
        order = list(a._probe_order)
        a._suspect({"id": "n004", "inc": a.get("n004").incarnation, "from": "n000"})
        self.assertEqual(a._probe_order, order)

    def test_suspicion_by_gossip_counts_confirmations(self):
        c = SimCluster(seed=15)
        nodes = c.seed_all(6)
        a = nodes[0]
        inc = nodes[5].local.incarnation
        for origin in ("n001", "n002", "n003"):
            a._suspect({"id": "n005", "inc": inc, "from": origin})
        suspicion = a._suspicions["n005"]
        self.assertEqual(suspicion.confirmers, {"n001", "n002", "n003"})
        self.assertEqual(suspicion.timeout(), suspicion.minimum)


class IncarnationTests(SynchronousTestCase):
    def setUp(self):
        self.c = SimCluster(seed=16)
        self.a, self.b, _ = self.c.seed_all(3)
        self.inc = self.b.local.incarnation

    def alive_b(self, inc, **changes):
        message = self.b.local.alive_message()
        message.update(inc=inc, **changes)
        return message

    def test_older_alive_ignored(self):
        self.a._alive(self.alive_b(self.inc - 1, zone="elsewhere"))
        self.assertIsNone(self.a.get("n001").zone)

    def test_newer_alive_updates_metadata(self):
        events = []
        self.a.subscribe(events.append)
        self.a._alive(self.alive_b(self.inc + 1, zone="rack-2", cap=2.0))
        self.assertEqual(self.a.get("n001").zone, "rack-2")
        self.assertEqual(self.a.get("n001").capacity, 2.0)
        self.assertEqual([(e.kind, e.changes_ring) for e in events], [("updated", True)])

    def test_older_suspect_ignored(self):
        self.a._suspect({"id": "n001", "inc": self.inc - 1, "from": "n002"})
        self.assertIs(self.a.get("n001").state, State.ALIVE)

    def test_newer_alive_clears_suspicion(self):
        self.a._suspect({"id": "n001", "inc": self.inc, "from": "n002"})
        self.assertIs(self.a.get("n001").state, State.SUSPECT)
        self.a._alive(self.alive_b(self.inc + 1))
        self.assertIs(self.a.get("n001").state, State.ALIVE)
        self.assertNotIn("n001", self.a._suspicions)

    def test_same_incarnation_alive_does_not_clear_suspicion(self):
        self.a._suspect({"id": "n001", "inc": self.inc, "from": "n002"})
        self.a._alive(self.alive_b(self.inc))
        self.assertIs(self.a.get("n001").state, State.SUSPECT)

    def test_older_dead_ignored(self):
        self.a._dead({"id": "n001", "inc": self.inc - 1, "from": "n002"})
        self.assertIs(self.a.get("n001").state, State.ALIVE)

    def test_dead_is_final_for_its_incarnation(self):
        self.a._dead({"id": "n001", "inc": self.inc, "from": "n002"})
        self.assertIs(self.a.get("n001").state, State.DEAD)
        self.a._alive(self.alive_b(self.inc))
        self.assertIs(self.a.get("n001").state, State.DEAD)
        self.a._alive(self.alive_b(self.inc + 1))
        self.assertIs(self.a.get("n001").state, State.ALIVE)

    def test_suspect_about_self_is_refuted(self):
        self.a._suspect({"id": "n000", "inc": self.a.local.incarnation, "from": "n002"})
        self.assertEqual(self.a.counters["refutations"], 1)
        self.assertEqual(self.a.health.score, 1)  # Lifeguard: refuting costs health

    def test_dead_about_self_is_refuted(self):
        inc = self.a.local.incarnation
        self.a._dead({"id": "n000", "inc": inc + 5, "from": "n002"})
        self.assertEqual(self.a.local.incarnation, inc + 6)
        self.assertIs(self.a.local.state, State.ALIVE)

    def test_impersonation_is_refuted(self):
        # Someone announces our id with other addresses: we overrule it.
        message = self.a.local.alive_message()
        message.update(s3=["127.66.6.6", 1])
        inc = self.a.local.incarnation
        self.a._alive(message)
        self.assertEqual(self.a.local.incarnation, inc + 1)

    def test_own_echo_is_not_refuted(self):
        self.a._alive(self.a.local.alive_message())
        self.assertEqual(self.a.counters["refutations"], 0)


class HealthTests(SynchronousTestCase):
    def test_score_bounds_and_scaling(self):
        h = LocalHealth()
        h.apply(-1)
        self.assertEqual(h.score, 0)
        h.apply(100)
        self.assertEqual(h.score, LocalHealth.maximum - 1)
        self.assertEqual(h.scale(1.0), 8.0)

    def test_node_that_cannot_send_slows_down(self):
        c = SimCluster(seed=17)
        c.seed_all(5)
        sick = address_of(3)
        for i in range(5):
            if i != 3:
                c.net.block(sick, address_of(i))
        c.run(20)
        self.assertGreater(c.nodes["n003"].health.score, 2)

    def test_nacks_keep_a_healthy_prober_healthy(self):
        c = SimCluster(seed=18)
        c.seed_all(5)
        c.kill("n004")
        worst = 0
        for _ in range(200):
            c.run(0.1)
            worst = max(worst, *(c.nodes[i].health.score for i in ids(4)))
        self.assertGreater(sum(c.nodes[i].counters["probe_failures"] for i in ids(4)), 0)
        self.assertEqual(worst, 0)


class DisseminationTests(SynchronousTestCase):
    def test_retransmit_limit(self):
        c = SimCluster(seed=19)
        self.assertEqual(c.seed_all(5)[0].retransmit_limit(), 4)  # 4*ceil(log10 6)
        self.assertEqual(SimCluster().seed_all(10)[0].retransmit_limit(), 8)

    def test_queue_sends_each_message_at_most_limit_times(self):
        q = BroadcastQueue()
        q.queue("a", {"t": "alive", "id": "a"})
        sent = sum(len(q.take(1000, limit=3)) for _ in range(10))
        self.assertEqual(sent, 3)
        self.assertEqual(len(q), 0)

    def test_queue_prefers_least_sent_and_replaces_per_member(self):
        q = BroadcastQueue()
        q.queue("a", {"t": "alive", "id": "a", "inc": 1})
        q.take(1000, limit=5)
        q.queue("b", {"t": "alive", "id": "b"})
        self.assertIn('"id":"b"', q.take(40, limit=5)[0])
        q.queue("a", {"t": "dead", "id": "a", "inc": 1})
        self.assertEqual(len(q), 2)

    def test_queue_respects_the_byte_budget(self):
        q = BroadcastQueue()
        for i in range(100):
            q.queue(f"m{i}", {"t": "alive", "id": f"m{i}", "pad": "x" * 50})
        taken = q.take(1000, limit=5)
        self.assertLessEqual(sum(len(t) + 1 for t in taken), 1000)
        self.assertGreater(len(taken), 5)

    def test_datagrams_stay_under_the_limit_during_a_mass_join(self):
        c = SimCluster(seed=20)
        c.join_all(40)
        self.assertIsNotNone(c.run_until(c.converged, 60))
        self.assertLessEqual(c.net.largest, Membership.max_datagram)

    def test_update_reaches_everyone(self):
        c = SimCluster(seed=21, pushpull=False)
        nodes = c.seed_all(30)
        nodes[7].local.zone = "moved"
        nodes[7]._refute(nodes[7].local.incarnation)
        took = c.run_until(
            lambda: all(n.get("n007").zone == "moved" for n in nodes), 30)
        self.assertIsNotNone(took)

    def test_gossip_applied_before_requests(self):
        # A ping that carries "you are suspected" is answered with an ack
        # that already carries the refutation.
        c = SimCluster(seed=22)
        a, b = c.seed_all(2)
        b._broadcasts._items.clear()
        sent = []
        b.transport.write = lambda data, addr: sent.append(data)
        packet = json.dumps([
            {"t": "ping", "seq": 1, "to": "n001", "from": "n000"},
            {"t": "suspect", "id": "n001", "inc": b.local.incarnation, "from": "n000"},
        ]).encode()
        b.datagramReceived(a._sealer.seal(packet), address_of(0))
        reply = json.loads(a._sealer.open(sent[0]))
        self.assertEqual([m["t"] for m in reply], ["ack", "alive"])
        self.assertEqual(len(sent[0]) - SEAL_OVERHEAD, len(json.dumps(reply, separators=(",", ":"))))


class LeaveAndRejoinTests(SynchronousTestCase):
    def test_graceful_leave_is_left_not_dead(self):
        c = SimCluster(seed=23)
        c.seed_all(5)
        c.nodes["n004"].leave()
        self.assertIsNotNone(c.run_until(lambda: c.all_see("n004", State.LEFT), 5))
        kinds = {kind for _, _, kind, m in c.events if m == "n004"}
        self.assertEqual(kinds, {"left"})

    def test_restarted_member_is_alive_again_everywhere(self):
        c = SimCluster(seed=24)
        c.seed_all(5)
        c.kill("n003")
        c.run_until(lambda: c.all_see("n003", State.DEAD), 30)
        c.restart("n003", join_through="n000")
        self.assertIsNotNone(c.run_until(c.converged, 10))

    def test_partition_heals(self):
        c = SimCluster(seed=25)
        c.seed_all(6)
        left = [address_of(i) for i in range(3)]
        right = [address_of(i) for i in range(3, 6)]
        c.net.partition(left, right)
        c.run_until(lambda: c.view("n000", "n005") is State.DEAD
                    and c.view("n005", "n000") is State.DEAD, 60)
        c.net.heal()
        # Reconnection rides on push/pull towards dead members (every 30 s
        # on average per node), then gossip spreads the refutations.
        self.assertIsNotNone(c.run_until(c.converged, 180, step=1))


class PushPullTests(SynchronousTestCase):
    def setUp(self):
        self.c = SimCluster(seed=26)
        self.a, self.b, self.x = self.c.seed_all(3)

    def test_remote_dead_only_makes_us_suspect(self):
        state = self.b.local_state()
        for entry in state["members"]:
            if entry["id"] == "n002":
                entry["state"] = "dead"
        self.a.merge_state(state)
        self.assertIs(self.a.get("n002").state, State.SUSPECT)

    def test_remote_left_is_final(self):
        state = self.b.local_state()
        for entry in state["members"]:
            if entry["id"] == "n002":
                entry["state"] = "left"
        self.a.merge_state(state)
        self.assertIs(self.a.get("n002").state, State.LEFT)

    def test_unknown_members_learned(self):
        newcomer = Member("n099", ("127.0.10.99", 9671), 9672, ("127.0.10.99", 9670),
                          incarnation=1)
        self.a.merge_state({"from": "n001", "members": [newcomer.to_json()]})
        self.assertIs(self.a.get("n099").state, State.ALIVE)

    def test_malformed_entries_counted_not_raised(self):
        self.a.merge_state({"from": "n001", "members": [{"id": "x"}, {"state": "bogus"}]})
        self.assertEqual(self.a.counters["malformed"], 2)

    def test_periodic_pushpull_runs(self):
        self.c.run(Membership.pushpull_interval * 2)
        self.assertGreater(sum(n.counters["pushpulls"] for n in self.c.nodes.values()), 0)
        self.assertEqual(sum(n.counters["pushpull_failures"] for n in self.c.nodes.values()), 0)


class TimerFailureTests(SynchronousTestCase):
    """A round that raises is logged and counted, and the next round comes:
    no periodic timer of membership stops for good on one error."""

    def setUp(self):
        self.c = SimCluster(seed=27)
        self.a, self.b, self.x = self.c.seed_all(3)

    def fail_once(self, name):
        original = getattr(self.a, name)
        calls = []

        def failing(*args):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError(f"{name} broke")
            return original(*args)
        self.patch(self.a, name, failing)
        return calls

    def test_probing_goes_on_after_a_send_raises(self):
        calls = self.fail_once("_send")
        self.c.run(Membership.probe_interval * 5)
        self.assertGreater(len(calls), 3, "probes went on after the failed one")
        self.assertEqual(self.a.counters["internal_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_pushpull_goes_on_after_a_round_raises(self):
        calls = self.fail_once("_exchange_state")
        self.c.run(Membership.pushpull_interval * 6)
        self.assertGreater(len(calls), 1, "push/pull went on after the failed round")
        self.assertEqual(self.a.counters["internal_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_merge_that_raises_is_counted_not_unhandled(self):
        self.fail_once("merge_state")
        self.a._exchange_state(self.b.get("n001"))
        self.c.run(5)
        self.assertEqual(self.a.counters["internal_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
