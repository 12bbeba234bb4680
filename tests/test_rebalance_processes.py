"""Ring changes between real ``twistd z4node`` processes under continuous
load (boto3 PUTs and GETs through every node):

- a sixth node joins five: no request fails, the chunks moved come to
  about the ideal 1/6 of what the cluster stores, every chunk written
  before the join ends on exactly its three owners in the new ring, and
  every object reads back through every node;
- a node of five is drained with ``z4 cluster drain --watch``: no request
  fails, it ends holding no chunk, and once it is stopped every object
  still reads back through the other four.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import os
import random
import threading

import blake3
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.test_cluster_processes import (
    ClusterNode, all_alive, cluster_with_bucket, eventually, node_view, start_cluster)
from tests.test_handoff_processes import chunk_files
from z4node.cluster.ring import Ring, RingMember

log = Logger()


def settled(nodes, count):
    """A check for :func:`eventually`: every one of ``nodes`` has a ring of
    ``count`` members and has placed its data for it."""
    def check():
        rings = set()
        for node in nodes:
            status = node_view(node)
            rebalance = status["jobs"]["rebalance"]
            assert status["ring"]["members"] == count, status["ring"]
            assert rebalance["state"] == "settled", (node.id, rebalance)
            rings.add(rebalance["settled_ring"])
        assert len(rings) == 1, rings
    return check


class Load:
    """PUTs of new objects and GETs of ``before`` (checked by hash) through
    ``clients`` at random, until :attr:`stop` is set; what failed, and what
    was written."""

    def __init__(self, clients, before):
        self.clients, self.before = clients, before
        self.failures, self.written, self.stop = [], {}, threading.Event()

    def run(self):
        rng, n = random.Random(7), 0
        while not self.stop.is_set():
            client = rng.choice(self.clients)
            try:
                if n % 2:
                    data = os.urandom(64 * 1024)
                    client.put_object(Bucket="data", Key=f"during-{n}", Body=data)
                    self.written[f"during-{n}"] = blake3.blake3(data).digest()
                else:
                    key = rng.choice(sorted(self.before))
                    got = client.get_object(Bucket="data", Key=key)["Body"].read()
                    assert blake3.blake3(got).digest() == self.before[key], key
            except Exception as e:
                self.failures.append(repr(e))
            n += 1

NODES = 5
OBJECTS = 120
SIZE = 512 * 1024
# Seconds the ring must stay unchanged before chunks move (default 30).
ARGS = ["--rebalance-delay", "3"]


class RebalanceProcessTests(TestCase):
    timeout = 900

    def setUp(self):
        self.nodes = start_cluster(self, NODES, ARGS)

    def eventually(self, check, what, limit=120):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def fill(self):
        """Five converged nodes, a bucket, OBJECTS objects; their clients
        and {key: chunk hash}."""
        clients = yield cluster_with_bucket(self, self.nodes)
        before = {}
        for i in range(OBJECTS):
            data = os.urandom(SIZE)
            before[f"before-{i:03d}"] = blake3.blake3(data).digest()
            clients[i % NODES].put_object(Bucket="data", Key=f"before-{i:03d}", Body=data)
        yield self.eventually(settled(self.nodes, NODES), "five nodes settle on their ring")
        return clients, before

    @defer.inlineCallbacks
    def test_a_drained_node_moves_everything_away_under_load(self):
        clients, before = yield self.fill()
        drained = self.nodes[2]
        stay = [n for n in self.nodes if n is not drained]
        load = Load([c for n, c in zip(self.nodes, clients) if n is not drained], before)
        self.addCleanup(load.stop.set)
        running = threads.deferToThread(load.run)
        code, out, err = yield threads.deferToThread(
            drained.z4, "cluster", "drain", "--watch")
        self.assertEqual(code, 0, err)
        self.assertIn("Drained: this node holds no last copy", out)
        self.assertEqual(chunk_files(drained), set())
        drained.stop()
        load.stop.set()
        yield running
        self.assertEqual(load.failures, [])
        ring = Ring([RingMember(n.id) for n in stay])
        files = {n.id: chunk_files(n) for n in stay}
        for key, digest in before.items():
            holders = {n for n, have in files.items() if digest in have}
            self.assertEqual(holders, set(ring.owners(digest, 3)), key)
        everything = dict(before, **load.written)
        for client in (c for n, c in zip(self.nodes, clients) if n is not drained):
            for key in random.Random(5).sample(sorted(everything), 40):
                got = client.get_object(Bucket="data", Key=key)["Body"].read()
                self.assertEqual(blake3.blake3(got).digest(), everything[key], key)

    @defer.inlineCallbacks
    def test_a_sixth_node_joins_under_load(self):
        clients, before = yield self.fill()
        # Load through the five while the sixth joins and data moves.
        load = Load(list(clients), before)
        self.addCleanup(load.stop.set)
        running = threads.deferToThread(load.run)
        sixth = ClusterNode(self, os.path.dirname(self.nodes[0].data_dir), NODES,
                            join=self.nodes[0].gossip, args=ARGS)
        sixth.start()
        self.nodes.append(sixth)
        clients.append(sixth.client())
        yield self.eventually(all_alive(self.nodes), "six nodes converge")
        yield self.eventually(settled(self.nodes, NODES + 1),
                              "six nodes settle on the new ring", limit=300)
        load.stop.set()
        yield running
        self.assertEqual(load.failures, [])
        self.assertGreater(len(load.written), 0)
        written = load.written

        moved = sum(node_view(n)["jobs"]["rebalance"]["moved_bytes"] for n in self.nodes)
        ideal = 3 * OBJECTS * SIZE / (NODES + 1)
        log.info("rebalance: {moved} bytes moved for a join; ideal {ideal:.0f} "
                 "({ratio:.2f}x)", moved=moved, ideal=ideal, ratio=moved / ideal)
        self.assertLess(moved, 1.5 * ideal)
        self.assertGreater(moved, 0.5 * ideal)

        ring = Ring([RingMember(n.id) for n in self.nodes])
        files = {n.id: chunk_files(n) for n in self.nodes}
        for key, digest in before.items():
            holders = {n for n, have in files.items() if digest in have}
            self.assertEqual(holders, set(ring.owners(digest, 3)), key)
        everything = dict(before, **written)
        for client in clients:
            for key in random.Random(3).sample(sorted(everything), 40):
                got = client.get_object(Bucket="data", Key=key)["Body"].read()
                self.assertEqual(blake3.blake3(got).digest(), everything[key], key)
