"""The SWIM and DHT simulator: N nodes in one process on a fake clock.

    python -m benchmarks.swim_sim [--nodes 100 500] [--quick]

Measures what docs/cluster.md reports, for each N:

- detection: kill one node; seconds (= probe periods, the interval is 1 s)
  until the first member suspects it, and until *every* member marks it
  dead. Several kills in sequence; median and p99 (the largest, for the
  few trials run).
- false positives: 5% packet loss both ways plus one node stalled for 2 s
  once a minute, over 10 simulated minutes: members wrongly declared dead
  (and, for context, suspicions raised and refuted).
- dissemination: one member announces a change; probe periods until every
  member has it, against log2(N).
- DHT hops: the real kademlia classes (ProviderServer and friends, sealed)
  over an in-memory datagram transport on a plain asyncio loop: lookup
  rounds of providers(), against log2(N).

Everything is seeded; a run reproduces exactly.
"""

import argparse
import asyncio
import math
import random
import statistics
import time

from tests.swimcluster import SimCluster
from z4node.cluster.members import State


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def detection(n, trials, seed):
    c = SimCluster(seed=seed, latency=0.001, jitter=0.002)
    c.seed_all(n)
    c.run(10)
    first_suspect, all_dead = [], []
    rng = random.Random(seed)
    for _ in range(trials):
        victim = rng.choice(sorted(c.nodes))
        c.kill(victim)
        start = c.clock.seconds()
        suspected = c.run_until(
            lambda: any(v is State.SUSPECT or v is State.DEAD
                        for v in c.states_of(victim).values()), 30, step=0.05)
        dead = c.run_until(lambda: c.all_see(victim, State.DEAD), 120, step=0.05)
        first_suspect.append(suspected)
        all_dead.append(c.clock.seconds() - start if dead is not None else float("inf"))
        # Bring it back, so every trial runs at N nodes.
        c.restart(victim, join_through=min(c.nodes))
        c.run_until(c.converged, 120, step=0.5)
        c.run(5)
    return first_suspect, all_dead


def false_positives(n, minutes, seed):
    c = SimCluster(seed=seed, latency=0.001, jitter=0.002, loss=0.05)
    c.seed_all(n)
    stalled = sorted(c.nodes)[n // 2]
    for minute in range(minutes):
        c.run(30)
        c.stall(stalled, 2.0)
        c.run(30)
    deaths = [e for e in c.events if e[2] == "dead"]
    suspicions = sum(node.counters["suspicions"] for node in c.nodes.values())
    refutations = sum(node.counters["refutations"] for node in c.nodes.values())
    return len(deaths), suspicions, refutations, c.net.sent


def dissemination(n, trials, seed):
    c = SimCluster(seed=seed, latency=0.001, jitter=0.002, pushpull=False)
    c.seed_all(n)
    c.run(5)
    rng = random.Random(seed)
    rounds = []
    for trial in range(trials):
        origin = c.nodes[rng.choice(sorted(c.nodes))]
        origin.local.zone = f"zone-{trial}"
        origin._refute(origin.local.incarnation)
        origin.health.apply(-1)  # the refutation's health penalty is not part of this
        target = origin.local.incarnation
        took = c.run_until(
            lambda: all(node.get(origin.local.id).incarnation >= target
                        for node in c.nodes.values()), 60, step=0.05)
        rounds.append(took / origin.probe_interval)
        c.run(5)
    return rounds


# -- DHT ------------------------------------------------------------------------

class _MemoryTransport(asyncio.DatagramTransport):
    def __init__(self, network, address):
        super().__init__()
        self._network = network
        self._address = address

    def sendto(self, data, addr):
        protocol = self._network.get(tuple(addr))
        if protocol is not None:
            asyncio.get_event_loop().call_soon(protocol.datagram_received, data, self._address)

    def close(self):
        self._network.pop(self._address, None)

    def get_extra_info(self, name, default=None):
        return self._address if name == "sockname" else default


class _WallClock:
    def seconds(self):
        return time.time()


async def _dht_hops(n, lookups, seed):
    from z4node.cluster.dht import ProviderDirectory, ProviderServer, RecordSigner, dht_key
    from z4node.cluster.sealing import Sealer, derive_key

    secret = "simulator-cluster-secret"
    clock = _WallClock()
    network = {}
    servers = []
    rng = random.Random(seed)
    for i in range(n):
        server = ProviderServer(clock, f"m{i:04d}", Sealer(derive_key(secret, b"dht"), clock),
                                RecordSigner(derive_key(secret, b"dht-record")),
                                ProviderDirectory.ksize, ProviderDirectory.alpha, 2.0)
        address = ("10.1.%d.%d" % (i // 250, i % 250 + 1), 9672)
        protocol = server._create_protocol()
        protocol.connection_made(_MemoryTransport(network, address))
        server.protocol = protocol
        network[address] = protocol
        servers.append((server, address))
        if i:
            await server.bootstrap([servers[rng.randrange(i)][1]])
    signer = RecordSigner(derive_key(secret, b"dht-record"))
    hops = []
    for j in range(lookups):
        chunk = "%064x" % rng.getrandbits(256)
        key = dht_key(chunk)
        provider, _ = servers[rng.randrange(n)]
        member_id = f"m{servers.index((provider, _)):04d}"
        await provider.store_entry(key, signer.make(key, member_id, time.time() + 3600))
        asker, _ = servers[rng.randrange(n)]
        entries, rounds = await asker.find_entries(key)
        if not any(e[0] == member_id for e in entries):
            raise AssertionError(f"lookup {j} did not find its provider")
        hops.append(rounds)
    return hops


def dht_hops(n, lookups, seed):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_dht_hops(n, lookups, seed))
    finally:
        # Pings the routing tables fired at full buckets may still be in
        # flight; let them finish (their timeouts are cancelled) quietly.
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--quick", action="store_true",
                        help="fewer trials and 2 simulated minutes (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    trials = 4 if args.quick else 20
    minutes = 2 if args.quick else 10
    for n in args.nodes:
        print(f"== {n} nodes ==", flush=True)
        t0 = time.time()
        suspect, dead = detection(n, trials if n <= 100 else max(4, trials // 2), args.seed)
        print(f"detection ({len(dead)} kills): first suspicion median {statistics.median(suspect):.2f}"
              f" p99 {percentile(suspect, 99):.2f} periods; dead everywhere median "
              f"{statistics.median(dead):.2f} p99 {percentile(dead, 99):.2f} periods "
              f"[{time.time() - t0:.0f} s]", flush=True)
        t0 = time.time()
        deaths, suspicions, refutations, packets = false_positives(n, minutes, args.seed)
        print(f"false positives ({minutes} min, 5% loss, one node stalled 2 s each minute): "
              f"{deaths} deaths, {suspicions} suspicions, {refutations} refutations, "
              f"{packets} packets [{time.time() - t0:.0f} s]", flush=True)
        t0 = time.time()
        rounds = dissemination(n, trials, args.seed)
        print(f"dissemination ({len(rounds)} updates): median {statistics.median(rounds):.2f} "
              f"max {max(rounds):.2f} periods; log2(n) = {math.log2(n):.2f} "
              f"[{time.time() - t0:.0f} s]", flush=True)
        t0 = time.time()
        hops = dht_hops(n, 50 if not args.quick else 10, args.seed)
        print(f"DHT lookup rounds ({len(hops)} lookups): mean {statistics.mean(hops):.2f} "
              f"median {statistics.median(hops)} max {max(hops)}; log2(n) = {math.log2(n):.2f}"
              f" [{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
