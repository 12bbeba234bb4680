"""Tests for `z4 cluster status|members`: a real HTTP node in this process,
the CLI's blocking urllib calls in a thread."""

import argparse
import io
import json
import os
import random
import sys

from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from z4node.admin.cluster_cli import add_cluster_commands
from z4node.cluster.membership import Member
from z4node.cluster.service import ClusterService
from z4node.testing.dht import MemoryDHT
from z4node.web.status import make_z4_resource

SECRET = "cli-test-cluster-secret"


def member(i, zone=None):
    host = f"10.0.0.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), zone=zone, incarnation=7)


class ClusterCLITests(TestCase):
    def setUp(self):
        clock = Clock()
        clock.advance(1_700_000_000)
        cluster = ClusterService(clock, random.Random(0), SECRET, member(1, "rack-1"),
                                 "127.0.0.1")
        cluster.dht = MemoryDHT(clock).directory("node-1")
        cluster.membership.merge_state(
            {"from": "node-2", "members": [member(2).to_json(), member(3).to_json()]})
        cluster.membership._suspect({"id": "node-3", "inc": 7, "from": "node-2"})
        root = Resource()
        root.putChild(b"_z4", make_z4_resource(clock, {"id": "node-1", "started": 0}, cluster))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.data = self.mktemp()
        os.makedirs(self.data)
        with open(os.path.join(self.data, "node.json"), "w") as f:
            json.dump({"id": "node-1", "s3_host": "127.0.0.1",
                       "s3_port": port.getHost().port}, f)
        parser = argparse.ArgumentParser(prog="z4")
        add_cluster_commands(parser.add_subparsers())
        self.parser = parser
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", io.StringIO())

    def run_cli(self, *argv):
        args = self.parser.parse_args(list(argv))
        return threads.deferToThread(args.func, args)

    async def test_members_table(self):
        code = await self.run_cli("cluster", "members", "--data", self.data)
        self.assertEqual(code, 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertTrue(lines[0].startswith("ID"))
        self.assertTrue(lines[1].startswith("node-1 *"))
        self.assertIn("rack-1", lines[1])
        self.assertRegex(lines[3], r"^node-3\s+suspect\s+7\s+10\.0\.0\.3:9670")

    async def test_members_json(self):
        code = await self.run_cli("cluster", "members", "--json", "-d", self.data)
        self.assertEqual(code, 0)
        peers = json.loads(self.stdout.getvalue())
        self.assertEqual(len(peers["members"]), 3)

    async def test_status_table(self):
        code = await self.run_cli("cluster", "status", "--data", self.data)
        self.assertEqual(code, 0)
        out = self.stdout.getvalue()
        self.assertIn("2 alive, 1 suspect, 0 dead, 0 left", out)
        self.assertRegex(out, r"node\s+node-1")
        self.assertNotIn(SECRET, out)

    async def test_no_node_in_data_dir(self):
        code = await self.run_cli("cluster", "status", "--data", self.mktemp())
        self.assertEqual(code, 1)
        self.assertIn("node.json not found", sys.stderr.getvalue())
