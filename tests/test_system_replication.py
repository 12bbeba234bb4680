"""Three real ``twistd z4node`` processes: access keys, buckets and grants
made through one node work on every node, and a node that was down (SIGKILL)
catches up on what it missed when it comes back.

Every process this test starts, it stops (addCleanup). Nothing listens on
anything but 127.0.0.1.
"""

import json
import signal

from botocore.exceptions import ClientError
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.test_cluster_processes import all_alive, eventually, node_view, start_cluster

NODES = 3


class SystemReplicationTests(TestCase):
    timeout = 300

    def setUp(self):
        self.nodes = start_cluster(self, NODES)

    def eventually(self, check, what):
        return eventually(self, check, what, nodes=self.nodes)

    def create_key(self, node, name):
        code, out, err = node.z4("key", "create", name, "--json")
        self.assertEqual(code, 0, err)
        key = json.loads(out)
        return key["access_key_id"], key["secret_access_key"]

    @defer.inlineCallbacks
    def test_keys_and_buckets_on_every_node(self):
        yield self.eventually(all_alive(self.nodes), "three nodes converge")

        # A key made through node 0 signs requests on node 2.
        alice = self.create_key(self.nodes[0], "alice")
        yield self.eventually(lambda: self.nodes[2].client(alice).list_buckets(),
                              "node 2 knows alice's key")
        status = node_view(self.nodes[0])["jobs"]["system_tables"]
        self.assertGreater(status["published"], 0)
        self.assertEqual((status["quorum"], status["quorum_failures"]), (2, 0))

        # A bucket made through node 1 is listed by node 0, and alice's
        # grant on it (made through node 1) lets her in through node 2.
        admin1 = self.nodes[1].client()
        admin1.create_bucket(Bucket="shared")
        code, _, err = self.nodes[1].z4("bucket", "allow", "shared", "--key", "alice",
                                        "--read")
        self.assertEqual(code, 0, err)

        def listed():
            names = [b["Name"] for b in self.nodes[0].client().list_buckets()["Buckets"]]
            assert "shared" in names, names
        yield self.eventually(listed, "node 0 lists the bucket")
        yield self.eventually(
            lambda: self.nodes[2].client(alice).list_objects_v2(Bucket="shared"),
            "alice reads the bucket through node 2")

        # Node 2 is killed. A key made meanwhile (2 of 3 hold it: a
        # majority) and a key deleted meanwhile reach it when it is back.
        victim = self.nodes[2]
        victim.kill(signal.SIGKILL)
        bob = self.create_key(self.nodes[0], "bob")
        code, _, err = self.nodes[1].z4("key", "delete", "alice")
        self.assertEqual(code, 0, err)
        yield self.eventually(lambda: self._refused(self.nodes[0].client(alice)),
                              "node 0 refuses alice's deleted key")
        victim.start()
        yield self.eventually(lambda: victim.client(bob).list_buckets(),
                              "the restarted node knows bob's key")
        yield self.eventually(lambda: self._refused(victim.client(alice)),
                              "the restarted node refuses alice's deleted key")

    @staticmethod
    def _refused(client):
        try:
            client.list_buckets()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidAccessKeyId", e.response
            return
        raise AssertionError("the deleted key still works")
