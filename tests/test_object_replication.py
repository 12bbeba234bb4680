"""Three real ``twistd z4node`` processes are one store: an object written
through one node is read, listed and deleted through the others, a
multipart upload begun on one node is completed on another (and a retry
of that completion through a third gets the same answer), and with one
node killed (SIGKILL) the other two still take writes and serve every
object; the killed node, restarted, serves what was written without it.
A node killed in the middle of a stream of PUTs loses no acknowledged one.
The aws CLI copies a file up through one node and down through another.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import hashlib
import os
import signal
import threading

from botocore.exceptions import ClientError
from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.test_cluster_processes import all_alive, cluster_with_bucket, eventually, start_cluster

NODES = 3
MIB = 1024 * 1024


def body(client, key, bucket="data"):
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def listed(client, bucket="data"):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


class ObjectReplicationTests(TestCase):
    timeout = 400

    def setUp(self):
        self.nodes = start_cluster(self, NODES)

    def eventually(self, check, what, limit=60):
        return eventually(self, check, what, limit=limit, nodes=self.nodes)

    @defer.inlineCallbacks
    def test_any_node_answers_and_two_of_three_suffice(self):
        clients = yield cluster_with_bucket(self, self.nodes)

        # Written through node 0 (one small object, one of several chunks),
        # read back through the other two.
        small, large = b"hello, cluster", os.urandom(9 * MIB + 123)
        clients[0].put_object(Bucket="data", Key="small", Body=small)
        clients[0].put_object(Bucket="data", Key="dir/large", Body=large)
        for client in clients[1:]:
            self.assertEqual(body(client, "small"), small)
            self.assertEqual(hashlib.sha256(body(client, "dir/large")).digest(),
                             hashlib.sha256(large).digest())
            self.assertEqual(listed(client), ["dir/large", "small"])

        # A multipart upload begun on node 1, its parts sent to nodes 1 and
        # 2, completed through node 2, read through node 0.
        upload = clients[1].create_multipart_upload(Bucket="data", Key="mp")["UploadId"]
        parts = [os.urandom(5 * MIB), os.urandom(MIB)]
        etags = [clients[1 + n].upload_part(Bucket="data", Key="mp", UploadId=upload,
                                            PartNumber=n + 1, Body=part)["ETag"]
                 for n, part in enumerate(parts)]
        listing = {"Parts": [{"PartNumber": n + 1, "ETag": etag}
                             for n, etag in enumerate(etags)]}
        completed = clients[2].complete_multipart_upload(
            Bucket="data", Key="mp", UploadId=upload, MultipartUpload=listing)
        self.assertEqual(body(clients[0], "mp"), b"".join(parts))
        # An SDK retrying the completion through another node gets the
        # same answer: the upload's end is replicated with it.
        retried = clients[0].complete_multipart_upload(
            Bucket="data", Key="mp", UploadId=upload, MultipartUpload=listing)
        self.assertEqual(retried["ETag"], completed["ETag"])

        # Deleted through node 2: gone on node 0.
        clients[2].delete_object(Bucket="data", Key="small")
        with self.assertRaises(ClientError) as raised:
            clients[0].get_object(Bucket="data", Key="small")
        self.assertEqual(raised.exception.response["Error"]["Code"], "NoSuchKey")

        # Node 0 is killed: nodes 1 and 2 (a majority of every replica set)
        # still take writes and serve everything written before.
        victim = self.nodes[0]
        victim.kill(signal.SIGKILL)
        later = os.urandom(5 * MIB + 7)
        yield self.eventually(
            lambda: clients[1].put_object(Bucket="data", Key="later", Body=later),
            "a write with one node down")
        self.assertEqual(body(clients[2], "later"), later)
        self.assertEqual(hashlib.sha256(body(clients[2], "dir/large")).digest(),
                         hashlib.sha256(large).digest())
        self.assertEqual(listed(clients[2]), ["dir/large", "later", "mp"])

        # Restarted and rejoined, node 0 serves what was written without it.
        victim.start()
        restarted = victim.client()
        yield self.eventually(all_alive(self.nodes), "the restarted node rejoins")
        got = yield self.eventually(lambda: body(restarted, "later"),
                                    "the restarted node serves the later write")
        self.assertEqual(got, later)
        self.assertEqual(listed(restarted), ["dir/large", "later", "mp"])

        # The aws CLI: a file copied up through node 0 (a multipart upload
        # at this size), down through node 1, listed through node 2.
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        source, copy = os.path.join(directory, "up.bin"), os.path.join(directory, "down.bin")
        with open(source, "wb") as f:
            f.write(os.urandom(20 * MIB + 5))
        self.nodes[0].aws("s3", "cp", source, "s3://data/cli/file.bin")
        self.nodes[1].aws("s3", "cp", "s3://data/cli/file.bin", copy)
        with open(source, "rb") as a, open(copy, "rb") as b:
            self.assertEqual(hashlib.sha256(a.read()).digest(), hashlib.sha256(b.read()).digest())
        self.assertIn("cli/file.bin", self.nodes[2].aws("s3", "ls", "--recursive",
                                                        "s3://data/").stdout)

    @defer.inlineCallbacks
    def test_a_node_killed_mid_stream_loses_no_acknowledged_put(self):
        clients = yield cluster_with_bucket(self, self.nodes, via=1)
        acknowledged, stop = {}, threading.Event()
        self.addCleanup(stop.set)

        def write():
            # PUTs through node 1, one after another; a PUT that fails is
            # not acknowledged (and may or may not have landed).
            n = 0
            while not stop.is_set():
                data = os.urandom(1000 + n * 3001)
                try:
                    clients[1].put_object(Bucket="data", Key=f"k{n:04d}", Body=data)
                    acknowledged[f"k{n:04d}"] = hashlib.sha256(data).digest()
                except ClientError:
                    pass
                n += 1
        writer = threads.deferToThread(write)
        yield self.eventually(lambda: self._at_least(acknowledged, 20), "20 PUTs")
        self.nodes[0].kill(signal.SIGKILL)
        before = len(acknowledged)
        yield self.eventually(lambda: self._at_least(acknowledged, before + 20),
                              "20 more PUTs with a node dead")
        stop.set()
        yield writer
        for client in clients[1:]:
            for key, digest in acknowledged.items():
                self.assertEqual(hashlib.sha256(body(client, key)).digest(), digest, key)
        self.nodes[0].start()
        restarted = self.nodes[0].client()
        # Until it has rejoined, a restarted node knows no layout but
        # itself (the layout is not persisted yet; docs/cluster.md).
        yield self.eventually(all_alive(self.nodes), "the restarted node rejoins")
        for key, digest in acknowledged.items():
            self.assertEqual(hashlib.sha256(body(restarted, key)).digest(), digest, key)
        self.assertLessEqual(set(acknowledged), set(listed(restarted)))

    @staticmethod
    def _at_least(acknowledged, count):
        assert len(acknowledged) >= count, len(acknowledged)
