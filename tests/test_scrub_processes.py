"""Bit rot in a cluster of three real ``twistd z4node`` processes, driven
by boto3: bytes flipped in 20 chunk files on one node. GETs through that
node of half the damaged objects return the right bytes (and repair those
copies); one scrub pass then finds the other 10 and heals them from the
other nodes' copies, setting the bad files aside.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import json
import os

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.damage import flip_a_byte
from tests.test_cluster_processes import cluster_with_bucket, eventually, start_cluster
from z4node.storage.chunks import chunk_hash

OBJECTS = 30
DAMAGED = 20
READ = 10  # damaged objects read before the scrub


def chunk_path(node, digest):
    name = digest.hex()
    return os.path.join(node.data_dir, "chunks", name[:2], name[2:4], name)


class ScrubProcessTests(TestCase):
    timeout = 400

    def setUp(self):
        self.nodes = start_cluster(self, 3)

    def eventually(self, check, what, limit=120):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def test_a_scrub_pass_heals_rotten_chunks_from_the_other_nodes(self):
        clients = yield cluster_with_bucket(self, self.nodes, via=1)
        contents = [os.urandom(100_000) for _ in range(OBJECTS)]
        for i, content in enumerate(contents):
            clients[1].put_object(Bucket="data", Key=f"k{i}", Body=content)
        damaged = self.nodes[0]
        paths = [chunk_path(damaged, chunk_hash(c)) for c in contents[:DAMAGED]]
        # Every node owns every chunk of a three-node cluster; a put
        # returns once two owners have theirs.
        def held():
            missing = [p for p in paths if not os.path.exists(p)]
            assert not missing, missing
        yield self.eventually(held, "node-0 holds its copies")
        for path in paths:
            flip_a_byte(path, 1000)

        client = clients[0]
        for i in range(READ):
            got = client.get_object(Bucket="data", Key=f"k{i}")["Body"].read()
            self.assertEqual(got, contents[i])

        code, out, err = yield threads.deferToThread(damaged.z4, "scrub", "start", "--json")
        self.assertEqual(code, 0, err)
        passes = json.loads(out)["passes"]

        def pass_done():
            code, out, err = damaged.z4("scrub", "status", "--json")
            status = json.loads(out)
            assert status["passes"] > passes, status
            return status
        status = yield self.eventually(pass_done, "a scrub pass ends")
        self.assertEqual((status["bad_found"], status["healed"], status["unrecoverable"]),
                         (DAMAGED - READ, DAMAGED - READ, 0))
        for path, content in zip(paths, contents):
            with open(path, "rb") as f:
                self.assertEqual(f.read(), content)
        for path in paths[READ:]:
            self.assertTrue(os.path.exists(path + ".corrupted"), path)
        for i, content in enumerate(contents):
            got = client.get_object(Bucket="data", Key=f"k{i}")["Body"].read()
            self.assertEqual(got, content)
        self.assertIn("replaced by a good copy from another node", damaged.log())
