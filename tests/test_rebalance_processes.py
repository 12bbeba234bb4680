"""A sixth real ``twistd z4node`` process joins five under continuous load
(boto3 PUTs and GETs through every node): no request fails, the chunks
moved come to about the ideal 1/6 of what the cluster stores, every chunk
written before the join ends on exactly its three owners in the new ring,
and every object reads back through every node.

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
    ClusterNode, all_alive, eventually, node_view, start_cluster)
from tests.test_handoff_processes import chunk_files
from z4node.cluster.ring import Ring, RingMember

log = Logger()

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
    def test_a_sixth_node_joins_under_load(self):
        yield self.eventually(all_alive(self.nodes), "five nodes converge")
        clients = [node.client() for node in self.nodes]
        clients[0].create_bucket(Bucket="data")
        for client in clients:
            yield self.eventually(lambda c=client: c.head_bucket(Bucket="data"),
                                  "every node knows the bucket")
        before = {}
        for i in range(OBJECTS):
            data = os.urandom(SIZE)
            before[f"before-{i:03d}"] = blake3.blake3(data).digest()
            clients[i % NODES].put_object(Bucket="data", Key=f"before-{i:03d}", Body=data)

        def settled(count):
            def check():
                rings = set()
                for node in self.nodes[:count]:
                    status = node_view(node)
                    rebalance = status["jobs"]["rebalance"]
                    assert status["ring"]["members"] == count, status["ring"]
                    assert rebalance["state"] == "settled", (node.id, rebalance)
                    rings.add(rebalance["settled_ring"])
                assert len(rings) == 1, rings
            return check
        yield self.eventually(settled(NODES), "five nodes settle on their ring")

        # Load through every node while the sixth joins and data moves.
        failures, written, stop = [], {}, threading.Event()
        self.addCleanup(stop.set)

        def load():
            rng, n = random.Random(7), 0
            while not stop.is_set():
                client = rng.choice(clients)
                try:
                    if n % 2:
                        data = os.urandom(64 * 1024)
                        client.put_object(Bucket="data", Key=f"during-{n}", Body=data)
                        written[f"during-{n}"] = blake3.blake3(data).digest()
                    else:
                        key = rng.choice(sorted(before))
                        got = client.get_object(Bucket="data", Key=key)["Body"].read()
                        assert blake3.blake3(got).digest() == before[key], key
                except Exception as e:
                    failures.append(repr(e))
                n += 1
        loader = threads.deferToThread(load)

        sixth = ClusterNode(self, os.path.dirname(self.nodes[0].data_dir), NODES,
                            join=self.nodes[0].gossip, args=ARGS)
        sixth.start()
        self.nodes.append(sixth)
        clients.append(sixth.client())
        yield self.eventually(all_alive(self.nodes), "six nodes converge")
        yield self.eventually(settled(NODES + 1), "six nodes settle on the new ring",
                              limit=300)
        stop.set()
        yield loader
        self.assertEqual(failures, [])
        self.assertGreater(len(written), 0)

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
