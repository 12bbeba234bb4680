"""Packet sealing: the cluster secret, and authenticated encryption of every
message one node sends another.

Owns: turning the operator's cluster secret into per-purpose keys, and
:class:`Sealer`, which seals a payload into a packet (PyNaCl ``SecretBox``,
XSalsa20-Poly1305) and opens a packet back, refusing anything forged, sealed
with another key, too old, from too far in the future, or seen before.
It knows nothing of what the payloads mean; callers must never parse a
packet that :meth:`Sealer.open` refused.

A sealed packet is ``nonce(24) || box(timestamp_ms(8, big endian) || payload)``:
48 bytes of overhead. The nonce is random (so no counter state to keep across
restarts) and doubles as the replay-cache key.
"""

import base64
import collections
import os
import struct

from nacl.exceptions import CryptoError
from nacl.hash import blake2b
from nacl.encoding import RawEncoder
from nacl.secret import SecretBox

# Overhead a sealed packet adds to its payload, in bytes: nonce + MAC + timestamp.
SEAL_OVERHEAD = SecretBox.NONCE_SIZE + SecretBox.MACBYTES + 8

# The purposes a cluster secret is split into. A packet sealed for one purpose
# does not open for another, so a captured gossip datagram cannot be replayed
# at the DHT port or the peer RPC.
PURPOSES = (b"gossip", b"dht", b"dht-record", b"channel")

# A secret shorter than this is refused: a guessable cluster secret lets anyone
# on the network join the cluster.
MIN_SECRET_CHARS = 16


class ClusterKeyError(ValueError):
    """The cluster secret given by the operator is unusable."""


def generate_secret(random_bytes=os.urandom):
    """A new cluster secret: 32 random bytes as URL-safe base64 (43 chars)."""
    return base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")


def derive_key(secret, purpose):
    """The 32-byte key for ``purpose`` (one of :data:`PURPOSES`).

    The operator's secret is any string of at least :data:`MIN_SECRET_CHARS`
    characters; keyed BLAKE2b with the purpose as key and a fixed
    personalisation turns it into independent keys per purpose.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    secret = secret.strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ClusterKeyError(
            f"the cluster secret must be at least {MIN_SECRET_CHARS} characters"
        )
    return blake2b(
        secret.encode("utf-8"),
        digest_size=32,
        key=purpose,
        person=b"z4node-cluster",
        encoder=RawEncoder,
    )


class Sealer:
    """Seals and opens packets for one purpose with one key.

    Every refused packet is counted in :attr:`dropped` by reason
    (``malformed``, ``forged`` — wrong key or tampered, ``stale``,
    ``future``, ``replayed``) and :attr:`opened` counts accepted ones, so
    ``/_z4/status`` can show an operator that a node with another secret is
    knocking.
    """

    # Accept packets whose timestamp is at most this many seconds old: a node
    # stopped (SIGSTOP, a long GC, a swapped VM) for this long still has its
    # queued packets accepted on resume, while a captured packet cannot be
    # replayed after it. Also the bound on clock skew between nodes.
    replay_window = 60.0
    # Accept timestamps up to this many seconds in the future (clock skew).
    future_window = 60.0

    def __init__(self, key, clock, random_bytes=os.urandom):
        self._box = SecretBox(key)
        self._clock = clock
        self._random_bytes = random_bytes
        # nonce -> time seen, oldest first: the replay cache. Nonces older
        # than the replay window are evicted because their packets would be
        # refused as stale anyway.
        self._seen = collections.OrderedDict()
        self.dropped = collections.Counter()
        self.opened = 0

    def seal(self, payload):
        """The packet carrying ``payload`` (bytes), stamped with now."""
        now_ms = int(self._clock.seconds() * 1000)
        nonce = self._random_bytes(SecretBox.NONCE_SIZE)
        return bytes(self._box.encrypt(struct.pack(">q", now_ms) + payload, nonce))

    def open(self, packet):
        """The payload of ``packet``, or None if it must be dropped."""
        if len(packet) < SEAL_OVERHEAD:
            self.dropped["malformed"] += 1
            return None
        try:
            plain = self._box.decrypt(packet)
        except CryptoError:
            self.dropped["forged"] += 1
            return None
        now = self._clock.seconds()
        (stamp_ms,) = struct.unpack(">q", plain[:8])
        age = now - stamp_ms / 1000.0
        if age > self.replay_window:
            self.dropped["stale"] += 1
            return None
        if age < -self.future_window:
            self.dropped["future"] += 1
            return None
        self._evict(now)
        nonce = bytes(packet[: SecretBox.NONCE_SIZE])
        if nonce in self._seen:
            self.dropped["replayed"] += 1
            return None
        self._seen[nonce] = now
        self.opened += 1
        return plain[8:]

    def _evict(self, now):
        # A nonce must be remembered as long as its packet could pass the
        # timestamp check: window plus the future allowance.
        horizon = now - self.replay_window - self.future_window
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[nonce]

    def counters(self):
        """Accepted and dropped packet counts, for status pages."""
        return {"opened": self.opened, "dropped": dict(self.dropped)}
