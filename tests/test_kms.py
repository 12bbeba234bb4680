"""Tests for z4node.objects.kms: the KMS master key, named KMS keys stored
wrapped in the replicated system tables, and ``z4 kms key``."""

import json
import os
import random

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.nodeprocess import NodeProcess
from tests.test_everywhere import FakeNet
from z4node.hlc import HybridLogicalClock
from z4node.objects.kms import KeyManager, KmsUnavailable, arn, master_key_from
from z4node.objects.system import AdminError, SystemTables
from z4node.storage.crypto import EncryptionKeyError
from z4node.storage.meta import MetaStore

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))


def run(d):
    return defer.ensureDeferred(d)


class MasterKeyTests(SynchronousTestCase):
    def test_from_the_environment_or_a_file(self):
        self.assertIsNone(master_key_from({}, {}))
        self.assertEqual(master_key_from({}, {"Z4_KMS_MASTER_KEY": MASTER.hex()}), MASTER)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(OTHER_MASTER.hex() + "\n")
        # The file wins over the environment.
        self.assertEqual(master_key_from({"kms-master-key-file": path},
                                         {"Z4_KMS_MASTER_KEY": MASTER.hex()}), OTHER_MASTER)

    def test_a_malformed_key_is_refused_by_name(self):
        error = self.assertRaises(EncryptionKeyError, master_key_from, {},
                                  {"Z4_KMS_MASTER_KEY": "short"})
        self.assertIn("Z4_KMS_MASTER_KEY", str(error))


class KeyManagerTests(SynchronousTestCase):
    def setUp(self):
        self.net = FakeNet(3)
        self.managers = {
            node: KeyManager(MASTER, self.net.system(node), self.net.clock,
                             HybridLogicalClock(self.net.clock),
                             random_bytes=random.Random(node).randbytes)
            for node in ("n0", "n1", "n2")}

    def tearDown(self):
        for _, everywhere in self.net.nodes.values():
            everywhere.stopService()

    def test_a_key_made_on_one_node_opens_on_every_node(self):
        key = self.successResultOf(run(self.managers["n0"].create("photos")))
        material = self.managers["n0"].material(key)
        self.assertEqual(len(material), 32)
        # Stored wrapped: the record does not hold the material.
        self.assertNotIn(material.hex(), json.dumps(key.__dict__))
        for node in ("n1", "n2"):
            other = self.managers[node]
            found = other.find(key.key_id)
            self.assertEqual(other.material(found), material)
            for reference in (arn(key), "alias/photos",
                              "arn:aws:kms:us-east-1:000000000000:alias/photos"):
                self.assertEqual(other.find(reference), found)
        self.assertIsNone(self.managers["n1"].find("alias/nothing"))
        self.assertIsNone(self.managers["n1"].find("00000000-0000-4000-8000-000000000000"))

    def test_names_are_unique_and_checked(self):
        self.successResultOf(run(self.managers["n0"].create("photos")))
        failure = self.failureResultOf(run(self.managers["n1"].create("photos")), AdminError)
        self.assertIn("exists already", str(failure.value))
        self.failureResultOf(run(self.managers["n1"].create("bad name")), AdminError)

    def test_another_master_key_opens_nothing(self):
        key = self.successResultOf(run(self.managers["n0"].create("photos")))
        wrong = KeyManager(OTHER_MASTER, self.net.system("n1"), self.net.clock,
                           HybridLogicalClock(self.net.clock))
        error = self.assertRaises(KmsUnavailable, wrong.material, key)
        self.assertIn("master key", str(error))
        self.assertFalse(wrong.summary(key)["usable"])

    def test_without_a_master_key_kms_is_off(self):
        off = KeyManager(None, self.net.system("n0"), self.net.clock,
                         HybridLogicalClock(self.net.clock))
        self.assertFalse(off.enabled)
        failure = self.failureResultOf(run(off.create("photos")), KmsUnavailable)
        self.assertIn("Z4_KMS_MASTER_KEY", str(failure.value))


class StoredKeysTests(TestCase):
    """KMS keys survive a restart: saved in the metadata store, loaded back."""

    @defer.inlineCallbacks
    def test_saved_and_loaded(self):
        path = os.path.join(os.path.abspath(self.mktemp()))
        os.makedirs(path)
        meta = MetaStore(reactor, os.path.join(path, "meta.sqlite3"))
        meta.start()
        hlc = HybridLogicalClock(reactor)
        system = SystemTables(meta, hlc, reactor)
        yield run(system.load())
        key = yield run(KeyManager(MASTER, system, reactor, hlc).create("photos"))
        yield meta.stop()

        meta = MetaStore(reactor, os.path.join(path, "meta.sqlite3"))
        meta.start()
        self.addCleanup(meta.stop)
        again = SystemTables(meta, HybridLogicalClock(reactor), reactor)
        yield run(again.load())
        self.assertEqual(again.kms_key(key.key_id), key)
        self.assertEqual([k.name for k in again.kms_keys()], ["photos"])
        # The clock is seeded past the KMS key's timestamp too.
        self.assertGreaterEqual(again._hlc.now(), key.hlc)


class KmsCliTests(TestCase):
    def z4(self, node, *args):
        code, out, err = node.z4(*args)
        self.assertEqual(code, 0, f"z4 {' '.join(args)} failed: {err}")
        return out

    def test_create_list_info(self):
        node = NodeProcess(self, env={"Z4_KMS_MASTER_KEY": MASTER.hex()}).start()
        created = json.loads(self.z4(node, "kms", "key", "create", "photos", "--json"))
        self.assertEqual(created["name"], "photos")
        self.assertTrue(created["arn"].endswith(":key/" + created["key_id"]))
        self.assertTrue(created["usable"])
        self.assertIn("Key id: " + created["key_id"],
                      self.z4(node, "kms", "key", "info", "alias/photos"))
        listed = self.z4(node, "kms", "key", "list").splitlines()
        self.assertEqual(listed[0].split(), ["NAME", "KEY", "ID", "USABLE"])
        self.assertEqual(listed[1].split()[:2], ["photos", created["key_id"]])
        code, _, err = node.z4("kms", "key", "create", "photos")
        self.assertEqual(code, 1)
        self.assertIn("exists already", err)
        code, _, err = node.z4("kms", "key", "info", "nothing")
        self.assertEqual((code, "no KMS key" in err), (1, True), err)

    def test_without_a_master_key_create_says_how_to_set_one(self):
        node = NodeProcess(self).start()
        code, _, err = node.z4("kms", "key", "create", "photos")
        self.assertEqual(code, 1)
        self.assertIn("Z4_KMS_MASTER_KEY", err)
        self.assertNotIn("Traceback", err)
