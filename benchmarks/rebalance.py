"""What hinted handoff and rebalancing cost: five real nodes, then six.

    python benchmarks/rebalance.py      # from the repository root

Starts five ``twistd z4node`` processes on 127.0.0.1 (``--rebalance-delay
3``) and measures:

- **hint delivery**: node 0 is killed (SIGKILL), ``--hint-mib`` objects of
  1 MiB are written through the others, node 0 is started again; the time
  from its start until no node holds a hint, and the MiB of chunks hinted;
- **a join under load**: four threads GET 256 KiB objects and PUT 64 KiB ones
  through every node; latency p50/p99 for ``--seconds`` before a sixth node
  joins, then from its start until every node has placed its data for the
  new ring; the bytes moved, beside the ideal (1/6 of the chunk bytes the
  cluster stored before the join).

Prints a Markdown table; docs/cluster.md quotes it.
"""

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_encryption import _Case  # noqa: E402
from benchmarks.cluster import wait_for  # noqa: E402
from tests.test_cluster_processes import (  # noqa: E402
    ClusterNode, all_alive, node_view, start_cluster)
from tests.test_rebalance_processes import settled  # noqa: E402

MiB = 1024 * 1024
ARGS = ["--rebalance-delay", "3"]


def chunk_bytes(node):
    total = 0
    for directory, _, files in os.walk(os.path.join(node.data_dir, "chunks")):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files
                     if not f.endswith(".tmp"))
    return total


def hints_left(nodes):
    def check():
        for node in nodes:
            assert not node_view(node)["jobs"]["hints"]["queues"], node.id
    return check


class Latencies:
    """GETs and PUTs through ``clients`` from ``threads`` threads, each
    request's latency kept in the current :attr:`phase`."""

    def __init__(self, clients, keys, threads=4):
        self.clients, self.keys = clients, keys
        self.samples = {}
        self.phase = None
        self.failures = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, index):
        n = 0
        while not self.stop.is_set():
            client = self.clients[(index + n) % len(self.clients)]
            started = time.monotonic()
            try:
                if n % 4 == 3:
                    client.put_object(Bucket="bench", Key=f"load-{index}-{n}",
                                      Body=os.urandom(64 * 1024))
                else:
                    client.get_object(Bucket="bench",
                                      Key=self.keys[(index * 7 + n) % len(self.keys)]
                                      )["Body"].read()
            except Exception:
                self.failures += 1
            else:
                if self.phase is not None:
                    self.samples.setdefault(self.phase, []).append(time.monotonic() - started)
            n += 1

    def percentiles(self, phase):
        values = sorted(self.samples.get(phase, []))
        if not values:
            return "-", "-", 0
        return (f"{statistics.median(values) * 1000:.0f} ms",
                f"{values[min(len(values) - 1, int(len(values) * 0.99))] * 1000:.0f} ms",
                len(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hint-mib", type=int, default=200,
                        help="MiB written while node 0 is down")
    parser.add_argument("--objects", type=int, default=200,
                        help="objects of 256 KiB written before the join")
    parser.add_argument("--seconds", type=int, default=20,
                        help="seconds of load measured before the join")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    case = _Case(workdir)
    try:
        nodes = start_cluster(case, 5, ARGS)
        wait_for(all_alive(nodes), "five nodes converge", 120)
        clients = [node.client() for node in nodes]
        clients[1].create_bucket(Bucket="bench")
        for client in clients:
            wait_for(lambda c=client: c.head_bucket(Bucket="bench"), "the bucket everywhere")

        nodes[0].kill(signal.SIGKILL)
        for i in range(args.hint_mib):
            clients[1 + i % 4].put_object(Bucket="bench", Key=f"hinted/{i:04d}",
                                          Body=os.urandom(MiB))
        hinted = sum(sum(q["bytes"] for q in node_view(n)["jobs"]["hints"]["queues"].values())
                     for n in nodes[1:])
        started = time.monotonic()
        nodes[0].start()
        wait_for(hints_left(nodes), "every hint delivered", 600)
        delivery = time.monotonic() - started
        print(f"hints: {hinted / MiB:.0f} MiB delivered {delivery:.1f} s after the restart",
              file=sys.stderr)

        keys = [f"object/{i:04d}" for i in range(args.objects)]
        for n, key in enumerate(keys):
            clients[n % 5].put_object(Bucket="bench", Key=key, Body=os.urandom(256 * 1024))
        wait_for(settled(nodes, 5), "five nodes settled", 120)
        load = Latencies(clients, keys)
        for thread in load.threads:
            thread.start()
        load.phase = "before"
        time.sleep(args.seconds)
        stored = sum(chunk_bytes(n) for n in nodes)
        load.phase = "during"
        joined = time.monotonic()
        sixth = ClusterNode(case, os.path.dirname(nodes[0].data_dir), 5,
                            join=nodes[0].gossip, args=ARGS)
        sixth.start()
        nodes.append(sixth)
        wait_for(settled(nodes, 6), "six nodes settled", 600)
        moving = time.monotonic() - joined
        load.stop.set()
        for thread in load.threads:
            thread.join()
        moved = sum(node_view(n)["jobs"]["rebalance"]["moved_bytes"] for n in nodes)
    finally:
        case.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    print("| measure | figure |")
    print("| --- | --- |")
    print(f"| hints delivered after the owner restarts | {hinted / MiB:.0f} MiB in "
          f"{delivery:.1f} s |")
    print(f"| bytes moved on a join (5 -> 6 nodes) | {moved / MiB:.1f} MiB; ideal "
          f"{stored / 6 / MiB:.1f} MiB ({moved / (stored / 6):.2f}x) |")
    print(f"| join: from start to every node settled | {moving:.1f} s |")
    for phase in ("before", "during"):
        p50, p99, count = load.percentiles(phase)
        print(f"| GET 256 KiB / PUT 64 KiB latency {phase} the join | p50 {p50}, "
              f"p99 {p99} ({count} requests) |")
    print(f"| failed requests | {load.failures} |")
    print(f"\n{os.cpu_count()} cores shared by the six nodes and the load threads.")


if __name__ == "__main__":
    main()
