"""Measure the ring: load spread and the keys that move on join and leave.

    python -m benchmarks.ring_spread [--keys 100000] [--vnodes 150]

For 3, 10 and 100 equal members prints:
- spread: max/mean of keys owned, counting a key once for each of its 3
  owners (what a node stores), and max/mean of the exact primary share;
- join: share of keys whose primary owner changes, and whose owner set
  changes, when one member joins (ideal primary share: 1/(n+1));
- leave: the same when one member leaves (ideal: 1/n).

Then the time to rebuild the ring of 50, 100 and 500 members after one more
joined (what a membership change costs the reactor thread).
"""

import argparse
import collections
import statistics
import time

from z4node.cluster.ring import Ring, RingMember


def members(count, prefix="node"):
    return [RingMember(f"{prefix}-{i:03d}") for i in range(count)]


def spread(ring, keys):
    owned = collections.Counter()
    for key in keys:
        owned.update(ring.owners(key, 3))
    counts = [owned[m] for m in ring.member_ids]
    shares = ring.primary_shares().values()
    return (
        max(counts) / statistics.mean(counts),
        max(shares) / statistics.mean(shares),
    )


def moved(before, after, keys):
    primary = sets = 0
    for key in keys:
        a, b = before.owners(key, 3), after.owners(key, 3)
        primary += a[0] != b[0]
        sets += set(a) != set(b)
    return primary / len(keys), sets / len(keys)


def measure(count, keys, vnodes):
    base = members(count)
    ring = Ring(base, vnodes)
    replica_spread, primary_spread = spread(ring, keys)
    joined = Ring(base + [RingMember("newcomer")], vnodes)
    left = Ring(base[1:], vnodes)
    return {
        "nodes": count,
        "replica_spread": replica_spread,
        "primary_spread": primary_spread,
        "join_primary": moved(ring, joined, keys)[0],
        "join_set": moved(ring, joined, keys)[1],
        "join_ideal": 1 / (count + 1),
        "leave_primary": moved(ring, left, keys)[0],
        "leave_set": moved(ring, left, keys)[1],
        "leave_ideal": 1 / count,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--vnodes", type=int, default=Ring.default_vnodes)
    args = parser.parse_args()
    keys = [f"key-{i}".encode() for i in range(args.keys)]
    print(f"{args.keys} keys, {args.vnodes} vnodes per member, 3 owners per key")
    print(
        "nodes  spread(3 owners)  spread(primary)  "
        "join: primary/set/ideal      leave: primary/set/ideal"
    )
    for count in (3, 10, 100):
        r = measure(count, keys, args.vnodes)
        print(
            f"{r['nodes']:5d}  {r['replica_spread']:16.3f}  {r['primary_spread']:15.3f}  "
            f"{r['join_primary']:6.1%} {r['join_set']:6.1%} {r['join_ideal']:6.1%}    "
            f"{r['leave_primary']:6.1%} {r['leave_set']:6.1%} {r['leave_ideal']:6.1%}"
        )
    for count in (50, 100, 500):
        base = members(count)
        Ring(base, args.vnodes)
        started = time.perf_counter()
        Ring(base + [RingMember("newcomer")], args.vnodes)
        print(f"rebuild of {count} members after one joined: "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
