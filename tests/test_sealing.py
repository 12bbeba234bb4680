"""Tests for z4node.cluster.sealing: what opens, and what is dropped and counted."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from z4node.cluster.sealing import (
    SEAL_OVERHEAD,
    ClusterKeyError,
    Sealer,
    derive_key,
    generate_secret,
)

SECRET = "correct horse battery staple"


def sealer(clock, secret=SECRET, purpose=b"gossip"):
    return Sealer(derive_key(secret, purpose), clock)


class SealerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.sender = sealer(self.clock)
        self.receiver = sealer(self.clock)

    def test_round_trip(self):
        packet = self.sender.seal(b"hello")
        self.assertEqual(len(packet), len(b"hello") + SEAL_OVERHEAD)
        self.assertEqual(self.receiver.open(packet), b"hello")
        self.assertEqual(self.receiver.counters(), {"opened": 1, "dropped": {}})

    def test_payload_is_encrypted(self):
        self.assertNotIn(b"secret-member-id", self.sender.seal(b"secret-member-id"))

    def test_wrong_key_dropped(self):
        other = sealer(self.clock, secret="another cluster's secret")
        self.assertIsNone(self.receiver.open(other.seal(b"join me")))
        self.assertEqual(self.receiver.dropped["forged"], 1)
        self.assertEqual(self.receiver.opened, 0)

    def test_other_purpose_dropped(self):
        dht = sealer(self.clock, purpose=b"dht")
        self.assertIsNone(self.receiver.open(dht.seal(b"find_node")))
        self.assertEqual(self.receiver.dropped["forged"], 1)

    def test_tampered_dropped(self):
        packet = bytearray(self.sender.seal(b"alive node-a 7"))
        packet[-1] ^= 1
        self.assertIsNone(self.receiver.open(bytes(packet)))
        self.assertEqual(self.receiver.dropped["forged"], 1)

    def test_short_garbage_dropped(self):
        self.assertIsNone(self.receiver.open(b"\x00" * 10))
        self.assertEqual(self.receiver.dropped["malformed"], 1)

    def test_replay_dropped(self):
        packet = self.sender.seal(b"dead node-b")
        self.assertEqual(self.receiver.open(packet), b"dead node-b")
        self.clock.advance(1)
        self.assertIsNone(self.receiver.open(packet))
        self.assertEqual(self.receiver.dropped["replayed"], 1)

    def test_stale_dropped(self):
        packet = self.sender.seal(b"old")
        self.clock.advance(Sealer.replay_window + 1)
        self.assertIsNone(self.receiver.open(packet))
        self.assertEqual(self.receiver.dropped["stale"], 1)

    def test_packet_delayed_within_window_opens(self):
        # A node that was stopped for a few seconds still reads its backlog.
        packet = self.sender.seal(b"queued")
        self.clock.advance(3)
        self.assertEqual(self.receiver.open(packet), b"queued")

    def test_future_dropped(self):
        ahead = Clock()
        ahead.advance(self.clock.seconds() + Sealer.future_window + 5)
        packet = sealer(ahead).seal(b"from the future")
        self.assertIsNone(self.receiver.open(packet))
        self.assertEqual(self.receiver.dropped["future"], 1)

    def test_replay_cache_evicts_old_nonces(self):
        for i in range(5):
            self.receiver.open(self.sender.seal(b"x%d" % i))
        self.assertEqual(len(self.receiver._seen), 5)
        self.clock.advance(Sealer.replay_window + Sealer.future_window + 1)
        self.receiver.open(self.sender.seal(b"fresh"))
        self.assertEqual(len(self.receiver._seen), 1)


class SecretTests(SynchronousTestCase):
    def test_generated_secret_is_long_and_random(self):
        a, b = generate_secret(), generate_secret()
        self.assertNotEqual(a, b)
        self.assertEqual(len(a), 43)
        derive_key(a, b"gossip")

    def test_short_secret_refused(self):
        self.assertRaises(ClusterKeyError, derive_key, "short", b"gossip")

    def test_purposes_get_distinct_keys(self):
        keys = {derive_key(SECRET, p) for p in (b"gossip", b"dht", b"channel")}
        self.assertEqual(len(keys), 3)

    def test_surrounding_whitespace_ignored(self):
        # A key file ends with a newline; the environment variable does not.
        self.assertEqual(derive_key(SECRET + "\n", b"channel"), derive_key(SECRET, b"channel"))
