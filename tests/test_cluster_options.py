"""Tests for z4node.cluster.options: --join parsing, validation, the secret."""

import os
import stat

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from z4node import durable
from z4node.cluster.options import (
    CLUSTER_OPTIONS,
    GENERATED_KEY_FILE,
    check_cluster_options,
    load_secret,
    parse_join,
)

SECRET = "a-perfectly-good-cluster-secret"


class Options(usage.Options):
    optParameters = CLUSTER_OPTIONS


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class ParseTests(SynchronousTestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual((options["gossip-port"], options["dht-port"], options["vnodes"]),
                         (9671, 9672, 150))
        self.assertEqual(options["capacity"], 1.0)
        self.assertIsNone(options["join"])

    def test_join_list(self):
        self.assertEqual(parse_join("127.0.10.1:7000, node-b,[::1]:9"),
                         [("127.0.10.1", 7000), ("node-b", 9671), ("::1", 9)])
        self.assertEqual(parse_join(None), [])

    def test_bad_join(self):
        for bad in ("host:port", ":9671", "host:0", "host:70000"):
            self.assertRaises(usage.UsageError, parse_join, bad)

    def test_check_returns_advertise_and_join(self):
        options = parse("--join", "127.0.10.1", "--gossip-port", "7001")
        self.assertEqual(check_cluster_options(options, "127.0.10.9"),
                         ("127.0.10.9", [("127.0.10.1", 9671)]))

    def test_wildcard_host_needs_advertise(self):
        self.assertRaises(usage.UsageError, check_cluster_options, parse(), "0.0.0.0")
        options = parse("--advertise", "127.168.1.5")
        self.assertEqual(check_cluster_options(options, "0.0.0.0")[0], "127.168.1.5")

    def test_invalid_values(self):
        for argv in (["--gossip-port", "0"], ["--dht-port", "9671"], ["--vnodes", "0"],
                     ["--capacity", "0"], ["--dead-grace", "0"]):
            self.assertRaises(usage.UsageError, check_cluster_options, parse(*argv), "h")


class SecretTests(SynchronousTestCase):
    def setUp(self):
        self.data = self.mktemp()

    def test_environment_first(self):
        self.assertEqual(load_secret({"Z4_CLUSTER_KEY": SECRET}, None, self.data, True), SECRET)

    def test_key_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(SECRET + "\n")
        self.assertEqual(load_secret({}, path, self.data, True), SECRET)

    def test_missing_key_file(self):
        self.assertRaises(usage.UsageError, load_secret, {}, "/nonexistent/key", self.data, False)

    def test_first_node_generates_and_keeps_it(self):
        secret = load_secret({}, None, self.data, False)
        path = os.path.join(self.data, GENERATED_KEY_FILE)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        # Restarted without a key, it finds the same one.
        self.assertEqual(load_secret({}, None, self.data, False), secret)

    def test_generated_secret_is_durable_before_it_is_used(self):
        """The file's bytes and its name in the data dir are fsynced."""
        synced_files, synced_directories = [], []
        original_fsync = os.fsync

        def fsync(fd):
            synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))
            original_fsync(fd)
        self.patch(os, "fsync", fsync)
        self.patch(durable, "fsync_directory", synced_directories.append)
        load_secret({}, None, self.data, False)
        path = os.path.join(os.path.realpath(self.data), GENERATED_KEY_FILE)
        self.assertTrue(any(f.startswith(path + ".") for f in synced_files), synced_files)
        self.assertIn(self.data, synced_directories)
        with open(os.path.join(self.data, GENERATED_KEY_FILE)) as f:
            self.assertEqual(load_secret({}, None, self.data, False), f.read().strip())

    def test_generated_secret_is_not_logged(self):
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        secret = load_secret({}, None, self.data, False)
        from twisted.logger import formatEvent
        text = " ".join(formatEvent(e) for e in logged)
        self.assertIn(GENERATED_KEY_FILE, text)
        self.assertNotIn(secret, text)

    def test_joining_node_without_secret_refused(self):
        e = self.assertRaises(usage.UsageError, load_secret, {}, None, self.data, True)
        self.assertIn("Z4_CLUSTER_KEY", str(e))

    def test_short_secret_refused(self):
        self.assertRaises(usage.UsageError, load_secret, {"Z4_CLUSTER_KEY": "short"}, None,
                          self.data, False)
