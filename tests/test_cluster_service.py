"""ClusterService on real sockets in one process: three nodes on 127.0.0.1
join, agree on the ring, push/pull over sealed HTTP (through the node's
streaming S3Site), find a chunk's provider through the real DHT, and see a
graceful leave."""

import json
import os
import random
import socket

import treq
from twisted.internet import defer, reactor, task
from twisted.python import usage
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from tests.test_web_status import ADMIN, Keys
from z4node.admin.cluster_cli import signed_headers
from z4node.cluster.channel import CallError, RemoteError, Reply
from z4node.cluster.members import Member, State
from z4node.cluster.options import CLUSTER_OPTIONS
from z4node.cluster.service import DRAIN_FILE, ClusterService
from z4node.replication.antientropy import AntiEntropy
from z4node.replication.chunks import ReplicatedChunks
from z4node.storage import merkle
from z4node.storage.chunks import CHUNK_SIZE, ChunkStore, chunk_hash
from z4node.s3.http import S3Site
from z4node.web.status import make_z4_resource

from tests.nodeprocess import free_gossip_port, free_port

SECRET = "service-test-cluster-secret"
CHUNK = "12" * 32


class Options(usage.Options):
    optParameters = CLUSTER_OPTIONS


@defer.inlineCallbacks
def wait_for(predicate, timeout=15.0, step=0.1):
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        yield task.deferLater(reactor, step, lambda: None)


class ClusterServiceTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start_node(self, index, join=None, secret=SECRET):
        root = Resource()
        # The node's own site: it streams request bodies instead of
        # buffering them, which the RPC resource must cope with.
        site_port = reactor.listenTCP(0, S3Site(root), interface="127.0.0.1")
        self.addCleanup(site_port.stopListening)
        argv = ["--gossip-port", str(free_gossip_port()), "--dht-port", str(free_port(socket.SOCK_DGRAM)),
                "--zone", f"z{index % 2}"]
        if join:
            argv += ["--join", join]
        options = Options()
        options.parseOptions(argv)
        cluster = ClusterService.from_options(
            reactor, options, {"Z4_CLUSTER_KEY": secret}, f"node-{index}",
            "127.0.0.1", site_port.getHost().port, self.mktemp())
        root.putChild(b"_z4", make_z4_resource(
            reactor, {"id": f"node-{index}", "started": reactor.seconds()}, cluster, Keys()))
        cluster.startService()
        self.addCleanup(lambda: cluster.running and cluster.stopService())
        yield wait_for(lambda: cluster._dht_listening, 5)
        return cluster

    @defer.inlineCallbacks
    def test_three_nodes(self):
        first = yield self.start_node(0)
        join = "127.0.0.1:%d" % first.local.gossip[1]
        second = yield self.start_node(1, join)
        third = yield self.start_node(2, join)
        nodes = [first, second, third]

        def converged():
            return all(len(n.membership.members()) == 3 for n in nodes)
        yield wait_for(converged)

        # Every node computes the same ring.
        self.assertEqual(len({n.ring.fingerprint() for n in nodes}), 1)
        self.assertEqual(second.owners(b"bucket-a"), third.owners(b"bucket-a"))
        # The joiners pulled the table over the peer channel.
        self.assertGreater(second.membership.counters["pushpulls"], 0)
        self.assertEqual(second.membership.counters["pushpull_failures"], 0)
        self.assertGreater(second.channel.counters["calls"], 0)

        # The peer channel: a call from one node is served by another,
        # which knows who called.
        async def whoami(peer_id, args, body):
            return Reply({"caller": peer_id, "served_by": "node-2", "args": args})
        third.serve("whoami", whoami)
        response = yield defer.Deferred.fromCoroutine(
            first.call("node-2", "whoami", {"x": 1}))
        self.assertEqual(response.result, {"caller": "node-0", "served_by": "node-2",
                                           "args": {"x": 1}})
        yield self.assertFailure(defer.Deferred.fromCoroutine(
            second.call("node-2", "no-such-op", {})), RemoteError)

        # The status endpoints answer over HTTP.
        url = f"http://127.0.0.1:{third.local.s3[1]}/_z4/peers"
        response = yield treq.get(url, headers=signed_headers(url, ADMIN, reactor.seconds()),
                                  persistent=False)
        peers = json.loads((yield response.content()))
        self.assertEqual({m["id"] for m in peers["members"]}, {"node-0", "node-1", "node-2"})

        # The DHT was seeded from membership and finds a provider.
        yield wait_for(lambda: third._dht_known >= 1, 5)
        yield first.dht.provide(CHUNK)
        found = yield third.dht.providers(CHUNK)
        self.assertEqual(found, {"node-0"})

        # A node with another secret is never admitted.
        intruder = yield self.start_node(3, join, secret="not-this-cluster-secret")
        yield task.deferLater(reactor, 3, lambda: None)
        self.assertIsNone(first.membership.get("node-3"))
        self.assertFalse(intruder.membership.joined)
        self.assertGreater(first.membership._sealer.dropped["forged"], 0)
        yield intruder.stopService()

        # Graceful leave: the others record "left" at once.
        yield third.stopService()
        yield wait_for(lambda: all(
            n.membership.get("node-2").state is State.LEFT for n in (first, second)), 5)
        self.assertEqual(len(first.ring), 2)


    @defer.inlineCallbacks
    def test_a_chunk_on_its_owners(self):
        """The replicated chunk manager over real sockets and chunk stores:
        a 4 MiB chunk put through a node that does not own it lands on its
        three owners only, and reads back through every node."""
        first = yield self.start_node(0)
        join = "127.0.0.1:%d" % first.local.gossip[1]
        nodes = [first]
        for i in (1, 2, 3):
            nodes.append((yield self.start_node(i, join)))
        yield wait_for(lambda: all(len(n.membership.members()) == 4 for n in nodes), 60)
        managers = {}
        for node in nodes:
            store = ChunkStore(reactor, self.mktemp())
            store.start()
            self.addCleanup(store.stop)
            managers[node.local.id] = ReplicatedChunks(store, node)
        data = os.urandom(CHUNK_SIZE)
        digest = chunk_hash(data)
        owners = first.owners(digest)
        writer = next(m for m in managers if m not in owners)
        yield defer.Deferred.fromCoroutine(managers[writer].put(digest, data))
        for member_id, manager in managers.items():
            stored = os.path.exists(manager.store.path(digest))
            self.assertEqual(stored, member_id in owners, member_id)
            got = yield defer.Deferred.fromCoroutine(manager.get(digest))
            self.assertEqual(got, data)

    @defer.inlineCallbacks
    def test_an_anti_entropy_sync_through_a_whole_tree_fits_the_channel(self):
        first = yield self.start_node(0)
        second = yield self.start_node(1, "127.0.0.1:%d" % first.local.gossip[1])
        yield wait_for(lambda: len(first.membership.members()) == 2
                       and len(second.membership.members()) == 2)
        table = _WholeTreeDiffers(1)
        ours = AntiEntropy(reactor, random.Random(0), first, [table], None)
        AntiEntropy(reactor, random.Random(0), second, [_WholeTreeDiffers(-2**63)], None)
        yield defer.ensureDeferred(ours.sync(table, b"bucket", second.local.id))
        # The root, then 16, 256 and 4,096 nodes, then the (empty) leaves.
        self.assertEqual(ours.counters["calls"], merkle.DEPTH + 2)


def member(i):
    host = f"127.0.30.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), incarnation=100)


class PushPullHandlerTests(SynchronousTestCase):
    """The push/pull a peer asks for over the channel, on a fake clock."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.cluster = ClusterService(self.clock, random.Random(1), SECRET, member(1),
                                      "127.0.0.1")

    def serve(self, args):
        return defer.ensureDeferred(self.cluster.handlers["swim.pushpull"]("node-2", args, None))

    def test_exchange_merges_and_answers_our_table(self):
        state = {"from": "node-2", "members": [member(2).to_json()]}
        reply = self.successResultOf(self.serve({"state": state}))
        self.assertEqual({m["id"] for m in reply.result["state"]["members"]},
                         {"node-1", "node-2"})
        self.assertIs(self.cluster.membership.get("node-2").state, State.ALIVE)

    def test_malformed_state_is_refused(self):
        for args in ({}, {"state": None}, {"state": {"members": "x"}}):
            failure = self.failureResultOf(self.serve(args), CallError)
            self.assertEqual(failure.value.code, "BadRequest")


class _WholeTreeDiffers:
    """A table whose every Merkle node differs from the other replica's
    (``value`` everywhere) and holds no leaf: a sync walks every level of
    the tree, 4,096 nodes at the last."""

    name = "versions"

    def __init__(self, value):
        self.store = self
        self.value = value

    def owners(self, partition):
        return []

    async def merkle_nodes(self, partition, nodes):
        return {node: self.value for node in nodes}

    async def merkle_leaves(self, partition, prefixes):
        return []


class FromOptionsTests(SynchronousTestCase):
    def build(self, data_dir, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return ClusterService.from_options(
            reactor, options, {"Z4_CLUSTER_KEY": "x" * 32}, "node-0", "127.0.0.1", 9670,
            data_dir)

    def test_dead_grace_sets_how_long_a_dead_member_keeps_its_ranges(self):
        cluster = self.build(self.mktemp(), "--dead-grace", "0.5")
        self.assertEqual(cluster.membership.dead_retention, 1800)

    def test_a_draining_node_stays_draining_across_a_restart(self):
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.assertFalse(self.build(data_dir).draining)
        with open(os.path.join(data_dir, DRAIN_FILE), "w") as f:
            f.write("draining\n")
        cluster = self.build(data_dir, "--capacity", "2")
        self.assertTrue(cluster.draining)
        self.assertNotIn("node-0", cluster.ring)
