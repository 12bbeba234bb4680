"""Tests for z4node.cluster.dht: the provider directory, its fake, and the
kademlia package extended underneath (a few real loopback tests)."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from z4node.cluster.dht import (
    IProviderDirectory,
    ProviderDirectory,
    ProviderProtocol,
    ProviderRoutingTable,
    ProviderStorage,
    RecordSigner,
    dht_key,
    node_id_for,
)
from z4node.cluster.sealing import Sealer, derive_key
from z4node.testing.dht import MemoryDHT

SECRET = "dht-test-cluster-secret"
CHUNK = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
OTHER_CHUNK = "0" * 64


def signer(secret=SECRET):
    return RecordSigner(derive_key(secret, b"dht-record"))


class DirectoryContract:
    """Behaviour every IProviderDirectory has; mixed into one TestCase per
    implementation. ``make(count)`` returns bootstrapped directories
    (Deferred or list)."""

    @defer.inlineCallbacks
    def test_provides_interface(self):
        (directory,) = yield self.make(1)
        self.assertTrue(verifyObject(IProviderDirectory, directory))

    @defer.inlineCallbacks
    def test_provider_found_from_another_node(self):
        nodes = yield self.make(4)
        yield nodes[1].provide(CHUNK)
        found = yield nodes[3].providers(CHUNK)
        self.assertEqual(found, {nodes[1].member_id})

    @defer.inlineCallbacks
    def test_every_provider_found(self):
        nodes = yield self.make(4)
        yield nodes[0].provide(CHUNK)
        yield nodes[2].provide(CHUNK)
        found = yield nodes[3].providers(CHUNK)
        self.assertEqual(found, {nodes[0].member_id, nodes[2].member_id})

    @defer.inlineCallbacks
    def test_a_withdrawn_record_is_no_longer_found(self):
        nodes = yield self.make(4)
        yield nodes[0].provide(CHUNK)
        yield nodes[2].provide(CHUNK)
        yield nodes[0].unprovide(CHUNK)
        found = yield nodes[3].providers(CHUNK)
        self.assertEqual(found, {nodes[2].member_id})

    @defer.inlineCallbacks
    def test_unknown_chunk_has_no_providers(self):
        nodes = yield self.make(3)
        yield nodes[0].provide(CHUNK)
        found = yield nodes[1].providers(OTHER_CHUNK)
        self.assertEqual(found, set())


class MemoryDirectoryTests(DirectoryContract, TestCase):
    def make(self, count):
        self.clock = Clock()
        self.dht = MemoryDHT(self.clock)
        return [self.dht.directory(f"m{i}") for i in range(count)]

    def found(self, directory, chunk=CHUNK):
        return self.successResultOf(directory.providers(chunk))

    def test_records_expire_without_republish(self):
        # A provider that stopped (no maintenance, no withdrawal).
        a, b = self.make(2)
        a.provide(CHUNK)
        self.clock.advance(a.record_ttl - 1)
        self.assertEqual(self.found(b), {"m0"})
        self.clock.advance(2)
        self.assertEqual(self.found(b), set())

    def test_republish_keeps_records(self):
        a, b = self.make(2)
        a.provide(CHUNK)
        for _ in range(12):
            self.clock.advance(a.republish_interval)
            a.maintain()
        self.assertEqual(self.found(b), {"m0"})


class StorageTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.storage = ProviderStorage(self.clock)
        self.signer = signer()
        self.key = dht_key(CHUNK)

    def entry(self, member, ttl=100):
        return self.signer.make(self.key, member, self.clock.seconds() + ttl)

    def test_keeps_a_set_per_key(self):
        self.storage[self.key] = self.entry("a")
        self.storage[self.key] = self.entry("b")
        self.storage[self.key] = self.entry("a", ttl=200)
        self.assertEqual(sorted(e[0] for e in self.storage[self.key]), ["a", "b"])

    def test_entries_expire(self):
        self.storage[self.key] = self.entry("a", ttl=10)
        self.storage[self.key] = self.entry("b", ttl=30)
        self.clock.advance(20)
        self.assertEqual([e[0] for e in self.storage[self.key]], ["b"])
        self.clock.advance(20)
        self.assertIsNone(self.storage.get(self.key))
        self.assertEqual(list(self.storage), [])

    def test_caps_providers_per_key(self):
        for i in range(ProviderStorage.max_providers + 5):
            self.storage[self.key] = self.entry(f"m{i}", ttl=100 + i)
        members = {e[0] for e in self.storage[self.key]}
        self.assertEqual(len(members), ProviderStorage.max_providers)
        self.assertIn(f"m{ProviderStorage.max_providers + 4}", members)
        self.assertNotIn("m0", members)

    def test_far_future_expiry_is_capped(self):
        self.storage[self.key] = self.entry("a", ttl=10**9)
        self.clock.advance(ProviderStorage.max_ttl + 1)
        self.assertIsNone(self.storage.get(self.key))

    def test_never_republishes_others_records(self):
        self.storage[self.key] = self.entry("a")
        self.clock.advance(10**6)
        self.assertEqual(self.storage.iter_older_than(0), [])


class RecordTests(SynchronousTestCase):
    def setUp(self):
        self.key = dht_key(CHUNK)
        self.entry = signer().make(self.key, "node-a", 5000)

    def test_valid(self):
        self.assertTrue(signer().valid(self.key, self.entry))

    def test_extended_expiry_invalid(self):
        self.assertFalse(signer().valid(self.key, ["node-a", 9999, self.entry[2]]))

    def test_moved_to_another_member_invalid(self):
        self.assertFalse(signer().valid(self.key, ["node-b", 5000, self.entry[2]]))

    def test_moved_to_another_key_invalid(self):
        self.assertFalse(signer().valid(dht_key(OTHER_CHUNK), self.entry))

    def test_other_cluster_invalid(self):
        self.assertFalse(signer("another cluster secret").valid(self.key, self.entry))

    def test_garbage_invalid(self):
        for junk in (None, [], ["a"], ["a", "b", b"c"], "string", [1, 2, 3]):
            self.assertFalse(signer().valid(self.key, junk))


class StoreRpcTests(SynchronousTestCase):
    def setUp(self):
        from kademlia.node import Node
        self.clock = Clock()
        self.clock.advance(1000)
        self.signer = signer()
        self.protocol = ProviderProtocol(
            Node(node_id_for("me")), ProviderStorage(self.clock), 8,
            Sealer(derive_key(SECRET, b"dht"), self.clock), self.signer, 2.0)
        self.key = dht_key(CHUNK)

    def store(self, sender_member, entry_member):
        entry = self.signer.make(self.key, entry_member, 5000)
        return self.protocol.rpc_store(("127.0.0.1", 1), node_id_for(sender_member),
                                       self.key, entry)

    def test_provider_storing_its_own_record_accepted(self):
        self.assertTrue(self.store("node-a", "node-a"))
        self.assertEqual(self.protocol.storage[self.key][0][0], "node-a")

    def test_record_for_another_provider_refused(self):
        self.assertFalse(self.store("node-a", "node-b"))
        self.assertIsNone(self.protocol.storage.get(self.key))
        self.assertEqual(self.protocol.refused_stores, 1)

    def test_unsigned_value_refused(self):
        self.assertFalse(self.protocol.rpc_store(
            ("127.0.0.1", 1), node_id_for("node-a"), self.key, "plain value"))

    def test_merges_providers(self):
        self.store("node-a", "node-a")
        self.store("node-b", "node-b")
        self.assertEqual({e[0] for e in self.protocol.storage[self.key]}, {"node-a", "node-b"})

    def test_newcomer_is_not_sent_other_records(self):
        self.store("node-a", "node-a")
        sent = []
        self.protocol.call_store = lambda *a: sent.append(a)
        from kademlia.node import Node
        self.protocol.welcome_if_new(Node(node_id_for("newcomer"), "127.0.0.1", 2))
        self.assertEqual(sent, [])
        self.assertFalse(self.protocol.router.is_new_node(Node(node_id_for("newcomer"))))


class RoutingTableTests(SynchronousTestCase):
    def test_neighbours_are_the_k_closest_contacts(self):
        import random
        from kademlia.node import Node
        rng = random.Random(3)
        me = Node(rng.randbytes(20))
        table = ProviderRoutingTable(None, 8, me)
        contacts = [Node(rng.randbytes(20), "127.0.0.1", i + 1) for i in range(60)]
        for contact in contacts:
            table.add_contact(contact)
        known = [n for b in table.buckets for n in b.get_nodes()]
        self.assertGreater(len(table.buckets), 2)
        for _ in range(200):
            key = Node(rng.randbytes(20))
            expected = sorted(known, key=key.distance_to)[:8]
            self.assertEqual([n.id for n in table.find_neighbors(key)],
                             [n.id for n in expected])


class LoopbackDirectoryTests(DirectoryContract, TestCase):
    """The real kademlia package over sealed UDP on 127.0.0.1."""

    timeout = 30

    @defer.inlineCallbacks
    def make(self, count, secret=SECRET, seeds=None):
        from twisted.internet import reactor
        nodes = []
        for i in range(count):
            self.started = getattr(self, "started", 0) + 1
            d = ProviderDirectory(reactor, f"member-{self.started}",
                                  Sealer(derive_key(secret, b"dht"), reactor), signer(secret))
            self.addCleanup(d.stop)
            yield d.listen(0, "127.0.0.1")
            nodes.append(d)
        seeds = seeds if seeds is not None else [("127.0.0.1", nodes[0].port)]
        for d in nodes:
            yield d.bootstrap([s for s in seeds if s[1] != d.port] or seeds)
        return nodes

    @defer.inlineCallbacks
    def test_lookup_counts_rounds(self):
        nodes = yield self.make(4)
        yield nodes[0].provide(CHUNK)
        found, rounds = yield nodes[2].lookup(CHUNK)
        self.assertEqual(found, {nodes[0].member_id})
        self.assertGreaterEqual(rounds, 1)

    @defer.inlineCallbacks
    def test_wrong_secret_node_learns_nothing_and_is_counted(self):
        nodes = yield self.make(3)
        yield nodes[0].provide(CHUNK)
        (intruder,) = yield self.make(1, secret="not the cluster secret",
                                      seeds=[("127.0.0.1", nodes[0].port)])
        self.assertEqual(intruder.known_nodes(), 0)
        found = yield intruder.providers(CHUNK)
        self.assertEqual(found, set())
        self.assertGreater(nodes[0].server._sealer.dropped["forged"], 0)


class MaintenanceTests(SynchronousTestCase):
    def test_a_failed_refresh_is_counted_and_the_next_one_runs(self):
        clock = Clock()
        calls = []

        def refresh(directory):
            calls.append(clock.seconds())
            if len(calls) == 1:
                raise OSError(101, "Network is unreachable")
            return defer.succeed(None)
        self.patch(ProviderDirectory, "_maintain", refresh)
        directory = ProviderDirectory(clock, "member-a",
                                      Sealer(derive_key(SECRET, b"dht"), clock), signer())
        directory._maintenance.start(directory.refresh_interval)
        self.addCleanup(directory._maintenance.stop)
        clock.advance(directory.refresh_interval)
        self.assertEqual(directory.status()["maintenance"]["failures"], 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        clock.advance(directory.refresh_interval)
        self.assertEqual(len(calls), 2, "the next refresh ran")
        self.assertEqual(directory.status()["maintenance"]["runs"], 2)
