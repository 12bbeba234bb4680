"""Tests for `z4 cluster status|members|hints`: a real HTTP node in this process,
the CLI's blocking urllib calls in a thread, under a parser shaped like the
z4 command's (top-level --data and --json, commands returning
(result, text))."""

import argparse
import json
import os
import random
import time

from twisted.internet import reactor, threads
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from z4node.admin.cluster_cli import ClusterCliError, add_cluster_commands
from z4node.cluster.members import Member
from z4node.cluster.service import ClusterService
from z4node.s3.http import S3Site
from z4node.testing.dht import MemoryDHT
from z4node.web.status import make_z4_resource
from tests.test_web_status import ADMIN, USER, Keys

SECRET = "cli-test-cluster-secret"


def member(i, zone=None):
    host = f"127.0.10.{i}"
    return Member(f"node-{i}", (host, 9671), 9672, (host, 9670), zone=zone, incarnation=7)


class ClusterCLITests(TestCase):
    def setUp(self):
        clock = Clock()
        # The node checks the CLI's signature against its clock.
        clock.advance(time.time())
        cluster = ClusterService(clock, random.Random(0), SECRET, member(1, "rack-1"),
                                 "127.0.0.1")
        cluster.dht = MemoryDHT(clock).directory("node-1")
        cluster.membership.merge_state(
            {"from": "node-2", "members": [member(2).to_json(), member(3).to_json()]})
        cluster.membership._suspect({"id": "node-3", "inc": 7, "from": "node-2"})
        root = Resource()
        # The shapes the node's jobs report (Node.jobs_status).
        jobs = {"gc": {"runs": 4, "failures": 1, "last_failure": {"at": 5.0, "error": "disk full"}},
                "lifecycle": {"passes": 0},
                "scrub": {"cursor": "0a/1b", "paused": False, "running": True,
                          "passes": 2, "chunks_verified": 1500,
                          "bytes_verified": 3_500_000, "bad_found": 1, "healed": 1,
                          "unrecoverable": 0},
                "system_tables": {"published": 5, "applied": 12, "refused": 1, "syncs": 3,
                                  "sync_failures": 2, "quorum_failures": 0, "quorum": 2},
                "hints": {"queues": {"node-3": {"count": 12, "bytes": 3_000_000,
                                                "oldest_age": 95.4}},
                          "window": 10800.0, "rate": 32 * 2**20, "handed_off": 20,
                          "hand_off_failures": 0, "skipped": 1, "held": 30,
                          "delivered": 17, "delivered_bytes": 4_000_000,
                          "already_there": 2, "undeliverable": 0, "expired": 0,
                          "copies_dropped": 5, "delivery": {"runs": 3, "failures": 0,
                                                             "last_failure": None}},
                "rebalance": {"state": "moving", "progress": 0.3, "settled_ring": "a1",
                              "ring": "b2", "rate": 32 * 2**20, "passes": 1,
                              "passes_completed": 0, "chunks_changed": 40,
                              "moved_chunks": 12, "moved_bytes": 48_000_000,
                              "dropped_copies": 3, "unplaced": 0,
                              "job": {"runs": 9, "failures": 0, "last_failure": None}},
                "antientropy": {"interval": 600.0, "passes": 4, "syncs": 8,
                                "sync_failures": 1, "partitions_differing": 2, "calls": 30,
                                "pulled": 7, "pushed": 3,
                                "last_pass": {"finished": 5.0, "seconds": 0.25,
                                              "repaired": 2},
                                "progress": {"done": 3, "total": 12},
                                "chunks": {"chunks_pulled": 5, "chunks_pushed": 1,
                                           "bytes_pulled": 5_000_000, "bytes_pushed": 1_000_000,
                                           "sync_failures": 0},
                                "job": {"runs": 4, "failures": 0, "last_failure": None}}}
        cluster.channel.counters.update(calls=40, failures=3, connections=2)
        root.putChild(b"_z4", make_z4_resource(
            clock, {"id": "node-1", "started": 0, "jobs": lambda: jobs}, cluster, Keys()))
        port = reactor.listenTCP(0, S3Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.data = self.mktemp()
        os.makedirs(self.data)
        with open(os.path.join(self.data, "credentials"), "w") as f:
            f.write(f"[default]\naws_access_key_id = {ADMIN[0]}\n"
                    f"aws_secret_access_key = {ADMIN[1]}\n")
        self.patch(os, "environ", {})
        with open(os.path.join(self.data, "node.json"), "w") as f:
            json.dump({"id": "node-1", "s3_host": "127.0.0.1",
                       "s3_port": port.getHost().port}, f)
        parser = argparse.ArgumentParser(prog="z4")
        parser.add_argument("--data")
        parser.add_argument("--json", action="store_true")
        add_cluster_commands(parser.add_subparsers(dest="family", required=True))
        self.parser = parser

    def run_cli(self, *argv):
        args = self.parser.parse_args(list(argv))
        return threads.deferToThread(args.run, args)

    async def test_members_table(self):
        _, text = await self.run_cli("--data", self.data, "cluster", "members")
        lines = text.splitlines()
        self.assertTrue(lines[0].startswith("ID"))
        self.assertTrue(lines[1].startswith("node-1 *"))
        self.assertIn("rack-1", lines[1])
        self.assertRegex(lines[3], r"^node-3\s+suspect\s+7\s+127\.0\.10\.3:9670")

    async def test_members_document(self):
        peers, _ = await self.run_cli("--data", self.data, "cluster", "members")
        self.assertEqual(len(peers["members"]), 3)
        json.dumps(peers)

    async def test_status_table(self):
        status, out = await self.run_cli("--data", self.data, "cluster", "status")
        self.assertEqual(status["id"], "node-1")
        self.assertIn("2 alive, 1 suspect, 0 dead, 0 left", out)
        self.assertRegex(out, r"node\s+node-1")
        self.assertNotIn(SECRET, out)

    async def test_status_replication_view(self):
        status, out = await self.run_cli("--data", self.data, "cluster", "status")
        self.assertEqual(status["jobs"]["system_tables"]["applied"], 12)
        self.assertRegex(out, r"system tables\s+write quorum 2; 5 published, 12 applied, "
                              r"1 refused; 3 syncs, 2 failed; 0 quorum failures")
        self.assertRegex(out, r"peer channel\s+40 calls, 3 failed, 2 connections accepted")
        self.assertRegex(out, r"channel packets\s+0 accepted, none dropped")
        self.assertRegex(out, r"scrub\s+at 0a/1b; 2 passes, 1500 chunks \(3.5 MB\) "
                              r"verified; 1 bad, 1 healed, 0 unrecoverable")
        self.assertRegex(out, r"gc\s+4 runs, 1 failed \(last: disk full\)")
        self.assertRegex(out, r"rebalance\s+moving \[######--------------\]  30%; "
                              r"12 chunks \(48.0 MB\) moved, 3 copies dropped, 0 unplaced")
        self.assertRegex(out, r"anti-entropy\s+pass running, 3/12 syncs; last pass 0.2 s, "
                              r"2 repaired; 4 passes, "
                              r"7 pulled, 3 pushed, 1 syncs failed; chunks 5 pulled, "
                              r"1 pushed \(6.0 MB\), 0 syncs failed")
        self.assertRegex(out, r"hints\s+12 held for 1 nodes \(3.0 MB\); 17 delivered, "
                              r"2 already there, 0 expired, 1 skipped")

    async def test_hints_table(self):
        hints, out = await self.run_cli("--data", self.data, "cluster", "hints")
        self.assertEqual(hints["queues"]["node-3"]["count"], 12)
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^FOR NODE\s+HINTS\s+BYTES\s+OLDEST")
        self.assertRegex(lines[1], r"^node-3\s+12\s+3.0 MB\s+95s")
        self.assertIn("17 delivered (4.0 MB of chunks), 2 already there, 0 undeliverable, "
                      "0 expired after 3 h, 1 skipped", out)

    async def test_signs_with_the_environment_key_first(self):
        self.patch(os, "environ", {"Z4_ACCESS_KEY": USER[0], "Z4_SECRET_KEY": USER[1]})
        with self.assertRaises(ClusterCliError) as e:
            await self.run_cli("--data", self.data, "cluster", "status")
        self.assertIn("403 this view is for admin keys only", str(e.exception))

    async def test_no_admin_key(self):
        os.unlink(os.path.join(self.data, "credentials"))
        with self.assertRaises(ClusterCliError) as e:
            await self.run_cli("--data", self.data, "cluster", "members")
        self.assertIn("no admin key: set Z4_ACCESS_KEY", str(e.exception))

    async def test_no_node_in_data_dir(self):
        with self.assertRaises(ClusterCliError) as e:
            await self.run_cli("--data", self.mktemp(), "cluster", "status")
        self.assertIn("node.json not found", str(e.exception))
