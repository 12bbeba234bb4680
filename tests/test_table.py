"""Tests for z4node.replication.table: quorum writes and reads over the
ring owners of a partition, read repair, last-writer-wins with concurrent
writers (a write an owner holds newer is reported), tombstones, and a
stalled owner -- on a fake network and clock, down to the calls each
operation makes."""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.fakecluster import FakeNet
from z4node.cluster.channel import PeerChannel
from z4node.cluster.ring import Ring, RingMember
from z4node.replication.errors import QuorumNotReached, majority
from z4node.replication.table import LocalStore, PartitionedTable, Schema

BUCKET = b"photos"


class ObjectSchema(Schema):
    def partition(self, entry):
        return entry["bucket"].encode()

    def sort_key(self, entry):
        return entry["key"]


class MemoryStore(LocalStore):
    def __init__(self):
        self.entries = {}

    async def apply(self, entry):
        if not isinstance(entry.get("hlc"), int):
            raise ValueError("hlc must be an integer")
        where = (entry["bucket"].encode(), entry["key"])
        current = self.entries.get(where)
        if current is not None and current["hlc"] >= entry["hlc"]:
            return False
        self.entries[where] = entry
        return True

    async def get(self, partition, sort_key):
        return self.entries.get((partition, sort_key))


def entry(key, hlc, value=None, deleted=False):
    return {"bucket": "photos", "key": key, "hlc": hlc, "value": value, "deleted": deleted}


def build(cluster):
    return PartitionedTable("objects", ObjectSchema(), MemoryStore(), cluster)


def run(coroutine):
    return defer.ensureDeferred(coroutine)


class QuorumTests(SynchronousTestCase):
    def test_quorums_at_one_two_three_and_five_nodes(self):
        # (nodes, owners of a partition, write quorum = read quorum)
        for count, owners, quorum in ((1, 1, 1), (2, 2, 2), (3, 3, 2), (5, 3, 2)):
            net = FakeNet(count, build)
            table = net.nodes["n0"]
            placed = table.owners(BUCKET)
            self.assertEqual((len(placed), majority(placed)), (owners, quorum))
            # Exactly a quorum of owners reachable: the write is acknowledged...
            down = placed[quorum:]
            for member_id in down:
                net.kill(member_id)
            coordinator = net.nodes[placed[0]]
            self.successResultOf(run(coordinator.write(entry("k", 1, "a"))))
            held = [m for m in placed if (BUCKET, "k") in net.nodes[m].store.entries]
            self.assertEqual(sorted(held), sorted(placed[:quorum]))
            # ...one fewer, and it is not (a single node cannot lose one).
            if quorum > 1:
                net.kill(placed[quorum - 1])
                self.failureResultOf(run(coordinator.write(entry("k", 2, "b"))),
                                     QuorumNotReached)
                self.assertEqual(coordinator.counters["quorum_failures"], 1)

    def test_a_single_node_is_a_cluster_of_one(self):
        net = FakeNet(1, build)
        table = net.nodes["n0"]
        self.successResultOf(run(table.write(entry("k", 1, "a"))))
        self.assertEqual(self.successResultOf(run(table.read(BUCKET, "k")))["value"], "a")
        self.assertEqual(net.calls, [])


class ReadTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNet(5, build)
        self.owners = self.net.nodes["n0"].owners(BUCKET)
        self.outsider = next(m for m in self.net.members if m not in self.owners)

    def table(self, member_id):
        return self.net.nodes[member_id]

    def store(self, member_id):
        return self.table(member_id).store.entries

    def test_a_read_asks_a_read_quorum_starting_with_itself(self):
        owner = self.owners[0]
        self.successResultOf(run(self.table(owner).write(entry("k", 1, "a"))))
        self.net.calls.clear()
        self.successResultOf(run(self.table(owner).read(BUCKET, "k")))
        # Its own copy costs no call: one get to one other owner.
        self.assertEqual(self.net.calls, [(owner, self.owners[1], "table.objects.get")])
        self.net.calls.clear()
        self.successResultOf(run(self.table(self.outsider).read(BUCKET, "k")))
        self.assertEqual(self.net.calls, [(self.outsider, o, "table.objects.get")
                                          for o in self.owners[:2]])

    def test_any_node_reads_what_any_node_wrote(self):
        self.successResultOf(run(self.table(self.outsider).write(entry("k", 1, "a"))))
        for member_id in self.net.members:
            found = self.successResultOf(run(self.table(member_id).read(BUCKET, "k")))
            self.assertEqual(found["value"], "a")

    def test_read_repair_brings_a_stale_owner_up_to_date(self):
        late = self.owners[0]
        self.net.kill(late)
        self.successResultOf(run(self.table(self.outsider).write(entry("k", 1, "a"))))
        self.assertNotIn((BUCKET, "k"), self.store(late))
        self.net.revive(late)
        # The late owner answers first (its own copy: nothing) and is
        # repaired; the answer is the newest a quorum holds.
        found = self.successResultOf(run(self.table(late).read(BUCKET, "k")))
        self.assertEqual(found["value"], "a")
        self.assertEqual(self.store(late)[(BUCKET, "k")]["value"], "a")
        self.assertEqual(self.table(late).counters["read_repairs"], 1)

    def test_while_data_moves_a_read_also_asks_the_previous_owners(self):
        # The partition's owners before a ring change: two of them are not
        # owners now, and hold a newer entry the owners that answer lack.
        shared = self.owners[0]
        previous = [shared] + [m for m in self.net.members if m not in self.owners][:2]
        self.moving_from(previous)
        for member_id in self.owners:
            self.store(member_id)[(BUCKET, "k")] = entry("k", 1, "old")
        for member_id in previous[1:]:
            self.store(member_id)[(BUCKET, "k")] = entry("k", 2, "new")
        self.net.calls.clear()
        found = self.successResultOf(run(self.table(shared).read(BUCKET, "k")))
        self.assertEqual(found["value"], "new")
        # Itself answered for both sets: one call to another owner, one to
        # a previous owner; the read repair goes to the owner that answered
        # (not to a previous owner: its data is moving away).
        gets = [(source, target) for source, target, op in self.net.calls
                if op == "table.objects.get"]
        self.assertEqual(gets[0], (shared, self.owners[1]))
        self.assertEqual(len(gets), 2)
        self.assertIn(gets[1], [(shared, m) for m in previous[1:]])
        self.assertEqual(self.store(shared)[(BUCKET, "k")]["value"], "new")
        self.assertEqual(self.store(self.owners[1])[(BUCKET, "k")]["value"], "new")
        # Once the move is over, only the owners are asked.
        for member_id in self.net.clusters:
            self.net.clusters[member_id].previous_ring = None
        self.net.calls.clear()
        self.successResultOf(run(self.table(shared).read(BUCKET, "k")))
        self.assertEqual(len(self.net.calls), 1)

    def moving_from(self, previous):
        """Every node places data for a ring of ``previous`` still (a move
        to the current ring is under way)."""
        for member_id in self.net.clusters:
            self.net.clusters[member_id].previous_ring = Ring(
                [RingMember(m) for m in previous])

    def test_while_data_moves_a_write_needs_a_majority_of_both_owner_sets(self):
        leaving = [m for m in self.net.members if m not in self.owners][:2]
        previous = [self.owners[0]] + leaving
        self.moving_from(previous)
        self.successResultOf(run(self.table(self.outsider).write(entry("k", 1, "a"))))
        holders = {m for m in self.net.members if (BUCKET, "k") in self.store(m)}
        # Every owner and every previous owner is sent the write; it is
        # acknowledged once a majority of each set holds it.
        self.assertEqual(holders, set(self.owners) | set(previous))
        # The previous owners that are not owners now down: a majority of
        # them can no longer hold the write, and it is refused.
        for member_id in leaving:
            self.net.kill(member_id)
        self.failureResultOf(run(self.table(self.owners[1]).write(entry("k", 2, "b"))),
                             QuorumNotReached)
        # Once the move is over, only the owners matter.
        for member_id in self.net.clusters:
            self.net.clusters[member_id].previous_ring = None
        self.successResultOf(run(self.table(self.owners[1]).write(entry("k", 3, "c"))))

    def test_concurrent_writers_converge_on_the_newest(self):
        a, b, c = self.owners
        # Two writers; each reaches a different pair of owners first.
        self.net.unreachable.add(c)
        self.assertTrue(self.successResultOf(run(self.table(a).write(entry("k", 20, "newer")))))
        self.net.unreachable = {a}
        # b holds the newer entry: the write reports it was not taken by
        # all of its quorum.
        self.assertFalse(self.successResultOf(run(self.table(b).write(entry("k", 10,
                                                                            "older")))))
        self.net.unreachable = set()
        self.assertEqual(self.store(b)[(BUCKET, "k")]["value"], "newer")
        self.assertEqual(self.store(c)[(BUCKET, "k")]["value"], "older")
        for reader in (c, self.outsider, a):
            found = self.successResultOf(run(self.table(reader).read(BUCKET, "k")))
            self.assertEqual(found["value"], "newer")
        self.assertEqual({self.store(o)[(BUCKET, "k")]["value"] for o in self.owners},
                         {"newer"})

    def test_a_tombstone_is_never_undone_by_a_stale_owner(self):
        a, b, c = self.owners
        self.successResultOf(run(self.table(a).write(entry("k", 1, "a"))))
        self.net.kill(c)
        self.successResultOf(run(self.table(a).write(entry("k", 2, deleted=True))))
        self.net.revive(c)
        # c still holds the live value; whoever reads through c sees the
        # tombstone, and c is repaired.
        self.assertFalse(self.store(c)[(BUCKET, "k")]["deleted"])
        for reader in (c, c, self.outsider):
            found = self.successResultOf(run(self.table(reader).read(BUCKET, "k")))
            self.assertTrue(found["deleted"])
        self.assertTrue(self.store(c)[(BUCKET, "k")]["deleted"])

    def test_a_stalled_owner_costs_one_timeout_not_the_answer(self):
        a, b, c = self.owners
        self.successResultOf(run(self.table(a).write(entry("k", 1, "a"))))
        self.net.stalled.add(b)
        d = run(self.table(a).read(BUCKET, "k"))
        self.assertNoResult(d)
        self.net.clock.advance(PeerChannel.call_timeout)
        self.assertEqual(self.successResultOf(d)["value"], "a")
        self.assertEqual(self.net.calls[-2:], [(a, b, "table.objects.get"),
                                               (a, c, "table.objects.get")])
        # A write with a stalled owner still completes on the other two.
        d = run(self.table(a).write(entry("k", 2, "b")))
        self.assertTrue(self.successResultOf(d))

    def test_an_owner_declared_dead_is_asked_last(self):
        a, b, c = self.owners
        self.successResultOf(run(self.table(a).write(entry("k", 1, "a"))))
        # b hangs (a SIGSTOPped process) and membership declared it dead:
        # the read goes to c at once instead of waiting out b's timeout.
        self.net.stalled.add(b)
        self.net.kill(b)
        self.net.calls.clear()
        self.assertEqual(self.successResultOf(run(self.table(a).read(BUCKET, "k")))["value"],
                         "a")
        self.assertEqual(self.net.calls, [(a, c, "table.objects.get")])

    def test_two_owners_down_fails_reads_and_writes(self):
        a, b, c = self.owners
        self.net.kill(b)
        self.net.kill(c)
        self.failureResultOf(run(self.table(a).write(entry("k", 1, "a"))), QuorumNotReached)
        self.failureResultOf(run(self.table(a).read(BUCKET, "k")), QuorumNotReached)

    def test_a_bad_entry_is_refused_by_the_owner(self):
        a, b, c = self.owners
        self.net.kill(c)
        self.failureResultOf(run(self.table(a).write(entry("k", "not-a-number"))),
                             QuorumNotReached)
