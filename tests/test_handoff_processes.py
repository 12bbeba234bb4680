"""Hinted handoff between five real ``twistd z4node`` processes, driven by
boto3: with one node killed (SIGKILL), 200 objects of 1 MiB are written
through the others; the chunks the dead node owns go to hint holders. A
GET of a chunk that only a hint holder has (its live owners' copies
deleted) succeeds through the DHT. Restarted, the node gets its hints:
then every chunk is on exactly its three ring owners, so the chunk data on
disk across the cluster is 3.0x what was written, and no hint is left.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import os
import signal
import time

import blake3
from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.test_cluster_processes import (
    all_alive, cluster_with_bucket, declared_dead, eventually, node_view, start_cluster)
from z4node.cluster.ring import Ring, RingMember

log = Logger()

NODES = 5
OBJECTS = 200
MIB = 1024 * 1024


def chunk_path(node, digest):
    name = digest.hex()
    return os.path.join(node.data_dir, "chunks", name[0:2], name[2:4], name)


def chunk_files(node):
    """The hashes of the chunk files in ``node``'s data dir."""
    found = set()
    for directory, _, files in os.walk(os.path.join(node.data_dir, "chunks")):
        found.update(bytes.fromhex(f) for f in files if len(f) == 64)
    return found


class HintedHandoffProcessTests(TestCase):
    timeout = 900

    def setUp(self):
        self.nodes = start_cluster(self, NODES)

    def eventually(self, check, what, limit=120):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def test_a_node_down_during_writes_gets_its_share_back_from_hints(self):
        clients = yield cluster_with_bucket(self, self.nodes, via=1)
        ring = Ring([RingMember(node.id) for node in self.nodes])

        victim = self.nodes[0]
        victim.kill(signal.SIGKILL)
        survivors = self.nodes[1:]
        yield self.eventually(declared_dead(survivors, victim),
                              "the survivors declare node-0 dead")
        digests = {}
        for i in range(OBJECTS):
            data = os.urandom(MIB)
            digests[f"obj-{i:03d}"] = blake3.blake3(data).digest()
            clients[1 + i % 4].put_object(Bucket="data", Key=f"obj-{i:03d}", Body=data)
        owners = {d: ring.owners(d, 3) for d in digests.values()}
        hinted = [d for d in digests.values() if victim.id in owners[d]]
        self.assertGreater(len(hinted), OBJECTS // 3)

        # Each hinted chunk is on its two live owners and on a holder.
        def held():
            files = {n.id: chunk_files(n) for n in survivors}
            for digest in hinted:
                holders = [n for n, have in files.items() if digest in have]
                assert len(holders) == 3, (digest.hex(), holders)
            return files
        files = yield self.eventually(held, "the hints are held")

        # A chunk that only its hint holder has is read through the DHT.
        key, digest = next((k, d) for k, d in digests.items() if d in hinted)
        holder = next(n for n in survivors
                      if digest in files[n.id] and n.id not in owners[digest])
        for node in survivors:
            if node.id in owners[digest]:
                os.unlink(chunk_path(node, digest))
        reader = next(c for n, c in zip(self.nodes, clients)
                      if n in survivors and n is not holder)
        got = yield self.eventually(
            lambda: reader.get_object(Bucket="data", Key=key)["Body"].read(),
            "a GET of the chunk only the hint holder has")
        self.assertEqual(blake3.blake3(got).digest(), digest)

        started = time.monotonic()
        victim.start()
        yield self.eventually(all_alive(self.nodes), "node-0 rejoins")

        # Delivered: every chunk on exactly its three owners, no hint left.
        def delivered():
            for node in self.nodes:
                queues = node_view(node)["jobs"]["hints"]["queues"]
                assert not queues, (node.id, queues)
            files = {n.id: chunk_files(n) for n in self.nodes}
            for digest in digests.values():
                holders = sorted(n for n, have in files.items() if digest in have)
                assert holders == sorted(owners[digest]), (digest.hex(), holders)
            stored = sum(os.path.getsize(chunk_path(n, d))
                         for n in self.nodes for d in files[n.id])
            return stored
        stored = yield self.eventually(delivered, "the hints are delivered", limit=300)
        elapsed = time.monotonic() - started
        # 3.0x the data written, plus each chunk file's sealing overhead.
        self.assertGreaterEqual(stored, 3 * OBJECTS * MIB)
        self.assertLess(stored, 3 * OBJECTS * (MIB + 1024))
        self.assertEqual(sum(1 for d in hinted if d in chunk_files(victim)), len(hinted))
        # The figure docs/cluster.md quotes (in _trial_temp/test.log).
        log.info("hints: {n} MiB of chunks delivered {s:.1f} s after the restart",
                 n=len(hinted), s=elapsed)
        for client in clients:
            self.assertEqual(
                blake3.blake3(client.get_object(Bucket="data", Key=key)["Body"].read())
                .digest(), digest)
