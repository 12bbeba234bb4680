"""The consistent-hash ring: which members own a key.

Owns: placing members on a 64-bit hash ring as virtual nodes (``vnodes`` per
unit of capacity) and answering :meth:`Ring.owners`. It is a pure function
of the member set it was given — id, capacity and zone of each — so every
node that sees the same membership computes the same owners. It never looks
at liveness: :class:`~z4node.cluster.service.ClusterService` rebuilds it
from the layout (members alive, suspect or dead, until a dead one is
forgotten) whenever that changes.

Building the ring of 500 members after one of them changed takes 40–85 ms
(100 members: 6 ms; it was 814 and 82 ms before member points were cached
and sorted as packed integers), measured by ``python -m
benchmarks.ring_spread``.

Measured (``benchmarks/ring_spread.py``, 150 vnodes, equal capacity,
100,000 keys; max/mean of keys owned as any of 3 replicas): 3 nodes 1.00,
10 nodes 1.09, 100 nodes 1.14. Keys whose primary owner changes when one
node joins a 10-node ring: 9.7% (ideal 1/11 = 9.1%); when one of 100
leaves: 1.0%. docs/cluster.md has the full table.
"""

import bisect
import functools
import hashlib


def ring_hash(key):
    """The ring position of ``key``: 64 bits of BLAKE2b of its bytes.

    Keys are bytes only: a chunk is placed by its raw 32-byte BLAKE3 name, a
    bucket by its UTF-8 name (:func:`bucket_key`). A str is refused rather
    than encoded, because the hex spelling of a chunk hash would land
    somewhere else than the hash itself. BLAKE2b rather than the chunk's
    own BLAKE3 name so that any key lands uniformly.
    """
    if not isinstance(key, bytes):
        raise TypeError(f"ring keys are bytes, not {type(key).__name__}")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def bucket_key(name):
    """The ring key of a bucket: its name as UTF-8."""
    return name.encode("utf-8")


@functools.lru_cache(maxsize=4096)
def _member_points(member_id, count):
    """The ring points (hashes) of one member's ``count`` virtual nodes.

    Cached: a membership change rebuilds the ring from every member, and
    hashing 150 points for each of 500 members took most of a second.
    """
    return [ring_hash(f"{member_id}#{i}".encode("utf-8")) for i in range(count)]


class RingMember:
    """What the ring needs to know about a member: id, capacity weight, zone."""

    __slots__ = ("id", "capacity", "zone")

    def __init__(self, id, capacity=1.0, zone=None):
        self.id = id
        self.capacity = capacity
        self.zone = zone

    def __repr__(self):
        return f"RingMember({self.id!r}, {self.capacity!r}, {self.zone!r})"


class Ring:
    """An immutable ring over a set of members.

    ``members`` are objects with ``id`` (str), ``capacity`` (float, relative
    weight; 1.0 is a typical node) and ``zone`` (str or None). A member of
    capacity 0 is draining (``z4 cluster drain``): it owns nothing.
    """

    # Virtual nodes per unit of capacity. 150 keeps the most loaded of 100
    # equal nodes within about 20% of the mean (see module docstring) while
    # a ring of 100 nodes is still only 15,000 points to build and search.
    default_vnodes = 150

    def __init__(self, members=(), vnodes=None):
        self.vnodes = self.default_vnodes if vnodes is None else vnodes
        self._members = {m.id: RingMember(m.id, m.capacity, m.zone) for m in members
                         if m.capacity > 0}
        # Each point is packed into one integer, hash then member index, and
        # sorting bare integers is several times faster than sorting
        # (hash, id) pairs. The rare point two members share (a 64-bit
        # collision) goes to them in id order, so every node orders the
        # ring identically.
        ids = sorted(self._members)
        shift = max(1, len(ids).bit_length())
        mask = (1 << shift) - 1
        packed = []
        for index, member_id in enumerate(ids):
            packed.extend((h << shift) | index for h in _member_points(
                member_id, self._vnode_count(self._members[member_id])))
        packed.sort()
        self._hashes = [p >> shift for p in packed]
        self._owners = [ids[p & mask] for p in packed]
        self._zoned = any(m.zone for m in self._members.values())

    def _vnode_count(self, member):
        # Every member gets at least one point, however small its capacity,
        # so it is never silently left out of the ring.
        return max(1, round(self.vnodes * member.capacity))

    def __len__(self):
        return len(self._members)

    def __contains__(self, member_id):
        return member_id in self._members

    @property
    def member_ids(self):
        return sorted(self._members)

    def to_json(self):
        """What placement depends on, as JSON (:meth:`from_json` rebuilds
        an equal ring)."""
        return {"vnodes": self.vnodes,
                "members": [[m.id, m.capacity, m.zone]
                            for m in sorted(self._members.values(), key=lambda m: m.id)]}

    @classmethod
    def from_json(cls, value):
        return cls([RingMember(*member) for member in value["members"]], value["vnodes"])

    def fingerprint(self):
        """A short digest of everything placement depends on.

        Two nodes with the same fingerprint answer every :meth:`owners` call
        identically; ``/_z4/ring`` shows it so operators can compare nodes.
        """
        h = hashlib.blake2b(digest_size=8)
        h.update(str(self.vnodes).encode())
        for m in sorted(self._members.values(), key=lambda m: m.id):
            h.update(f"\0{m.id}\0{m.capacity!r}\0{m.zone or ''}".encode())
        return h.hexdigest()

    def owners(self, key, n=3):
        """The ``n`` members that own ``key``, in preference order.

        Walks clockwise from the key's position taking each member the first
        time it appears. Where members have zones, members from zones not yet
        used are taken first, so the replicas land in as many distinct zones
        as exist; the remaining places are filled in ring order. Returns
        fewer than ``n`` ids only when the ring has fewer than ``n`` members.
        """
        if not self._hashes or n <= 0:
            return []
        want = min(n, len(self._members))
        start = bisect.bisect_right(self._hashes, ring_hash(key))
        total = len(self._owners)
        chosen = []
        seen = set()
        passed_over = []
        zones = set()
        for step in range(total):
            member_id = self._owners[(start + step) % total]
            if member_id in seen:
                continue
            seen.add(member_id)
            zone = self._members[member_id].zone
            if self._zoned and zone in zones:
                passed_over.append(member_id)
                continue
            zones.add(zone)
            chosen.append(member_id)
            if len(chosen) == want or len(seen) == len(self._members):
                break
        # Fewer distinct zones than replicas: fill up in ring order.
        chosen.extend(passed_over[: want - len(chosen)])
        return chosen

    def primary_shares(self):
        """Each member's share of the hash space as primary owner (sums to 1).

        Exact, from arc lengths: the load-spread figure that does not depend
        on a sample of keys.
        """
        space = 1 << 64
        shares = dict.fromkeys(self._members, 0.0)
        for i, member_id in enumerate(self._owners):
            # A key belongs to the first point strictly after its hash, so the
            # arc ending at point i is owned by point i.
            prev = self._hashes[i - 1] if i else self._hashes[-1] - space
            shares[member_id] += (self._hashes[i] - prev) / space
        return shares

    def summary(self):
        """A JSON-ready description of the ring for ``/_z4/ring``."""
        shares = self.primary_shares()
        return {
            "members": len(self._members),
            "vnodes_per_capacity": self.vnodes,
            "points": len(self._hashes),
            "zones": sorted({m.zone for m in self._members.values() if m.zone}),
            "fingerprint": self.fingerprint(),
            "primary_share": {k: round(v, 4) for k, v in sorted(shares.items())},
        }
