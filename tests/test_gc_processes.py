"""Garbage collection across three real ``twistd z4node`` processes,
driven by boto3: one node is stopped (SIGSTOP) while 1,000 objects are
written and 100 of them deleted; resumed, it gets what it missed (hints,
then a repair pass), and garbage collection brings the chunk files on disk
back to exactly three copies of the live data: every node holds every live
object's chunk, and no node holds a deleted one's. While the node is
stopped, nothing is collected.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import os
import signal

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.test_antientropy_processes import heads
from tests.test_cluster_processes import (
    all_alive, cluster_with_bucket, eventually, start_cluster, stop_until_declared_dead)
from z4node.storage.chunks import chunk_hash

OBJECTS = 1000
DELETED = 100
SIZE = 8 * 1024  # above the inline limit: one chunk file each
# Chunks no object uses wait 1.2 s instead of 10 minutes.
ARGS = ["--gc-grace", "0.02"]


def chunk_files(node):
    """{file name: size} of ``node``'s chunk files."""
    root = os.path.join(node.data_dir, "chunks")
    return {name: os.path.getsize(os.path.join(directory, name))
            for directory, _, names in os.walk(root) for name in names}


class GarbageCollectionProcessTests(TestCase):
    timeout = 900

    def setUp(self):
        self.nodes = start_cluster(self, 3, ARGS)

    def eventually(self, check, what, limit=120):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def test_deleted_objects_leave_three_copies_of_the_live_data(self):
        clients = yield cluster_with_bucket(self, self.nodes)
        stopped = self.nodes[2]
        yield stop_until_declared_dead(self, self.nodes, stopped)

        contents = [os.urandom(SIZE) for _ in range(OBJECTS)]

        def write():
            for i, content in enumerate(contents):
                clients[i % 2].put_object(Bucket="data", Key=f"k{i:04d}", Body=content)
            for i in range(DELETED):
                clients[1].delete_object(Bucket="data", Key=f"k{i:04d}")
        yield threads.deferToThread(write)
        deleted = {chunk_hash(c).hex() for c in contents[:DELETED]}
        live = {chunk_hash(c).hex() for c in contents[DELETED:]}

        # With node-2 down, no node can tell that nothing uses a chunk.
        for node in self.nodes[:2]:
            code, out, err = yield threads.deferToThread(node.z4, "gc", "run")
            self.assertEqual(code, 0, err)
            self.assertIn("This pass deleted 0 chunk files", out)

        stopped.signal(signal.SIGCONT)
        yield self.eventually(all_alive(self.nodes), "node-2 is alive again", limit=180)
        for node in self.nodes:
            code, out, err = yield threads.deferToThread(node.z4, "cluster", "repair")
            self.assertEqual(code, 0, err)

        def collected():
            for node in self.nodes:
                code, out, err = node.z4("gc", "run")
                assert code == 0, err
            for node in self.nodes:
                files = chunk_files(node)
                assert set(files) == live, (node.id, len(set(files) - live),
                                            len(live - set(files)))
        # Node-2's copies of what it missed arrive as hints (within a
        # delivery period of its return); each pass may find more to
        # collect.
        yield self.eventually(collected, "every node holds exactly the live chunks", limit=240)
        on_disk = sum(sum(chunk_files(node).values()) for node in self.nodes)
        self.assertEqual(on_disk, 3 * SIZE * (OBJECTS - DELETED))
        self.assertFalse(deleted & set(chunk_files(self.nodes[0])))

        sample = [f"k{i:04d}" for i in range(DELETED, OBJECTS, 97)]
        for key in sample:
            self.assertEqual(clients[0].get_object(Bucket="data", Key=key)["Body"].read(),
                             contents[int(key[1:])])
        for node in self.nodes:
            node.stop()
        expected = sorted([(f"k{i:04d}".encode(), 1) for i in range(DELETED)]
                          + [(f"k{i:04d}".encode(), 0) for i in range(DELETED, OBJECTS)])
        for node in self.nodes:
            self.assertEqual(heads(node), expected, node.id)
