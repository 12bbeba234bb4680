"""The twistd plugin: discoverable, options checked, reactor enforced, and
--debug logs requests without their query strings."""

import gc
import os
import signal
import subprocess
import sys
import urllib.request

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess, child_environment
from z4node import tap
from z4node.node import Node
from z4node.tap import Options


class PluginTests(TestCase):
    def test_plugin_is_found(self):
        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("z4node", names)

    def test_options(self):
        options = Options()
        options.parseOptions(["--port", "1234", "--data", "d", "--id", "n1", "--debug"])
        self.assertEqual(options["port"], 1234)
        self.assertTrue(options["data"].endswith("/d"))
        self.assertEqual(options["id"], "n1")
        self.assertTrue(options["debug"])
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--port", "70000"])

    def test_object_ownership_option(self):
        self.assertEqual(Options()["object-ownership"], "ObjectWriter")
        for mode in ("ObjectWriter", "BucketOwnerPreferred", "BucketOwnerEnforced"):
            options = Options()
            options.parseOptions(["--object-ownership", mode])
            self.assertEqual(options["object-ownership"], mode)
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--object-ownership", "Writer"])

    def test_startup_heap_is_frozen_once_the_node_is_ready(self):
        # The startup heap is left out of full collections, whose pauses
        # were the 4 KiB p99 at concurrency 32 (docs/performance.md).
        class FakeNode:
            ready = Deferred()
        self.patch(Node, "from_options", classmethod(lambda cls, *args: FakeNode))
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        options = Options()
        options.parseOptions(["--data", self.mktemp()])
        self.assertIs(tap.makeService(options), FakeNode)
        self.assertEqual(gc.get_freeze_count(), 0)
        FakeNode.ready.callback(None)
        self.assertGreater(gc.get_freeze_count(), 1000)

    def test_other_reactor_is_refused_with_one_line(self):
        done = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--reactor=poll", "-n", "--pidfile=", "z4node", "--data", self.mktemp()],
            env=child_environment(), capture_output=True, text=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("needs Twisted's asyncio reactor", done.stdout + done.stderr)

    def test_debug_logs_requests_but_not_signatures(self):
        node = NodeProcess(self, args=["--debug"]).start()
        s3 = node.client()
        s3.create_bucket(Bucket="logged")
        url = s3.generate_presigned_url("list_objects", Params={"Bucket": "logged"})
        urllib.request.urlopen(url).read()
        node.stop()
        log = node.log()
        self.assertIn("GET /logged ListObjects -> 200", log)
        self.assertNotIn("Signature=", log)
        self.assertNotIn(node.credentials()[1], log)

    def test_a_second_process_on_the_same_data_dir_is_refused_with_one_line(self):
        node = NodeProcess(self).start()
        second = NodeProcess(self, data_dir=node.data_dir)
        done = subprocess.run(second.command(), env=child_environment(), capture_output=True,
                              text=True, timeout=60, cwd=os.path.dirname(node.data_dir))
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"data dir {node.data_dir} is in use by another z4node process "
                      f"(pid {node.process.pid})", done.stdout + done.stderr)
        self.assertNotIn("Traceback", done.stdout + done.stderr + second.log())
        # The first node never noticed.
        node.client().create_bucket(Bucket="still-mine")
        node.stop()
        # Once it has stopped, the data dir can be served again.
        NodeProcess(self, data_dir=node.data_dir).start()
