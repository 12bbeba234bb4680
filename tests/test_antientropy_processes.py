"""Anti-entropy between three real ``twistd z4node`` processes, driven by
boto3: a node stopped (SIGSTOP) while objects are written and deleted and
multipart uploads begun and aborted, its hints dropped unsent
(``--hint-window`` of about a second), is brought up to date by ``z4
cluster repair``: every node then holds every live key, every deletion,
the open upload with its parts, the aborted upload's end, and every chunk
of the objects large enough to have chunks.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import os
import re
import signal
import sqlite3
from contextlib import closing

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.test_cluster_processes import (
    all_alive, cluster_with_bucket, eventually, start_cluster, stop_until_declared_dead)

OBJECTS = 200
DELETED = 20
LARGE = 12  # objects of 20 KB: one chunk each
# Hints live 0.36 s: dropped before they could be delivered. The ring
# settles 3 s after the cluster formed: chunk sets are compared only then.
ARGS = ["--hint-window", "0.0001", "--rebalance-delay", "3"]


def heads(node):
    """(key, deleted) of every key of the bucket in ``node``'s own copy
    (read from its stopped data dir)."""
    path = os.path.join(node.data_dir, "meta.sqlite3")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return sorted(c.execute("SELECT key, deleted FROM heads WHERE bucket='data'"))


def chunk_files(node):
    """The names of ``node``'s chunk files."""
    return sorted(name for _, _, files in os.walk(os.path.join(node.data_dir, "chunks"))
                  for name in files if len(name) == 64)


def multipart(node):
    """The open uploads, their parts and the ended uploads in ``node``'s
    own copy (read from its stopped data dir)."""
    path = os.path.join(node.data_dir, "meta.sqlite3")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return ([u for (u,) in c.execute("SELECT upload_id FROM uploads")],
                sorted(c.execute("SELECT upload_id, part_number FROM parts")),
                [u for (u,) in c.execute("SELECT upload_id FROM completed_uploads")])


class AntiEntropyProcessTests(TestCase):
    timeout = 600

    def setUp(self):
        self.nodes = start_cluster(self, 3, ARGS)

    def eventually(self, check, what, limit=120):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def test_a_node_that_missed_writes_and_deletes_is_repaired(self):
        clients = yield cluster_with_bucket(self, self.nodes)
        stopped = self.nodes[2]
        # Once it is declared dead, its copies come from hints (dropped
        # here) or anti-entropy.
        yield stop_until_declared_dead(self, self.nodes, stopped)

        def write():
            for i in range(OBJECTS):
                clients[i % 2].put_object(Bucket="data", Key=f"k{i:03d}",
                                          Body=f"object {i}".encode())
            for i in range(DELETED):
                clients[1].delete_object(Bucket="data", Key=f"k{i:03d}")
            for i in range(LARGE):
                clients[i % 2].put_object(Bucket="data", Key=f"large-{i}",
                                          Body=os.urandom(20_000))
            # A multipart upload begun meanwhile, with two parts, and one
            # begun and aborted.
            upload = clients[0].create_multipart_upload(Bucket="data", Key="mp")["UploadId"]
            for number in (1, 2):
                clients[number % 2].upload_part(Bucket="data", Key="mp", UploadId=upload,
                                                PartNumber=number, Body=b"part %d" % number)
            aborted = clients[1].create_multipart_upload(Bucket="data", Key="gone")["UploadId"]
            clients[0].abort_multipart_upload(Bucket="data", Key="gone", UploadId=aborted)
            return upload, aborted
        upload, aborted = yield threads.deferToThread(write)
        stopped.signal(signal.SIGCONT)
        yield self.eventually(all_alive(self.nodes), "node-2 is alive again", limit=180)
        repaired = 0
        for node in self.nodes:
            code, out, err = yield threads.deferToThread(node.z4, "cluster", "repair")
            self.assertEqual(code, 0, err)
            repaired += int(re.search(r"(\d+) entries and chunks repaired", out).group(1))
        # What node-2 missed came back through anti-entropy (its hints
        # expired unsent).
        self.assertGreater(repaired, 0)
        for node in self.nodes:
            node.stop()
        expected = sorted([(f"k{i:03d}".encode(), 1) for i in range(DELETED)]
                          + [(f"k{i:03d}".encode(), 0) for i in range(DELETED, OBJECTS)]
                          + [(f"large-{i}".encode(), 0) for i in range(LARGE)])
        # Three nodes: each owns every chunk.
        chunks = chunk_files(self.nodes[0])
        self.assertGreaterEqual(len(chunks), LARGE)
        for node in self.nodes:
            self.assertEqual(heads(node), expected, node.id)
            self.assertEqual(chunk_files(node), chunks, node.id)
            self.assertEqual(multipart(node), ([upload], [(upload, 1), (upload, 2)], [aborted]),
                             node.id)
