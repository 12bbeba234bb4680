"""What replication costs: a 3-node cluster beside a single node, in one run.

    python benchmarks/cluster.py      # from the repository root

Starts one single node and a cluster of three (every one a real ``twistd
z4node`` on 127.0.0.1, all sharing this machine's cores with the load
generators) and measures, on each:

- 4 KiB PUT, GET and HEAD and ListObjectsV2 (100 keys a page) rates with
  wrk at concurrency 32 (:mod:`benchmarks.loadgen`, whose script reads
  HEAD answers): on the single node, on the cluster through node 0, and on
  the cluster spread over its three nodes (three wrk, 10 connections each,
  rates summed);
- the server CPU (user + system, from ``/proc``) each node spent per
  request of every run above;
- a 256 MiB PUT and GET with curl, through node 0 (median of ``--runs``,
  taken round robin with the single node so that other load on the machine
  falls on both alike);
- each node's peak resident memory (VmHWM) over the whole run.

Prints a Markdown table with the cluster's figures as ratios of the single
node's; docs/performance.md quotes it.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_encryption import _Case, transfer  # noqa: E402
from benchmarks.loadgen import run_wrk  # noqa: E402
from tests.nodeprocess import NodeProcess  # noqa: E402
from tests.test_cluster_processes import all_alive, start_cluster  # noqa: E402

MiB = 1024 * 1024
KEYS = [f"small/{i:05d}" for i in range(1000)]
CONNECTIONS = 32

# operation name, HTTP method, boto3 operation, extra parameters, PUT body size
OPERATIONS = [
    ("4 KiB PUT", "PUT", "put_object", {}, 4096),
    ("4 KiB GET", "GET", "get_object", {}, 0),
    ("4 KiB HEAD", "HEAD", "head_object", {}, 0),
    ("LIST (100 keys)", "GET", "list_objects_v2", {"Prefix": "small/", "MaxKeys": 100}, 0),
]
# Requests a wrk run may send at most: the time bounds the runs.
UNBOUNDED = 10 ** 9
TICKS = os.sysconf("SC_CLK_TCK")


def wait_for(check, what, limit=120):
    deadline = time.monotonic() + limit
    while True:
        try:
            return check()
        except Exception as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {limit} s ({e!r})") from None
            time.sleep(0.2)


def paths_for(client, operation, params):
    """Presigned request paths for ``operation``, one per key (one for LIST)."""
    prefix = client.meta.endpoint_url
    keys = [None] if operation == "list_objects_v2" else KEYS

    def path(key):
        query = dict(params, Bucket="bench", **({"Key": key} if key else {}))
        return client.generate_presigned_url(operation, Params=query,
                                             ExpiresIn=3600)[len(prefix):]
    return [path(key) for key in keys]


def rate(targets, operation, workdir, seconds, body_file):
    """(requests a second, requests answered) of ``operation`` over
    ``targets`` ((node, client) pairs), the connections split evenly among
    them and the figures summed."""
    name, method, boto_operation, params, size = operation
    each = max(1, CONNECTIONS // len(targets))

    def one(index_target):
        index, (node, client) = index_target
        label = f"{name}-{len(targets)}-{index}".replace(" ", "_").replace("(", "")
        result = run_wrk(node.endpoint, method, paths_for(client, boto_operation, params),
                         workdir, label.replace(")", ""), connections=each, seconds=seconds,
                         limit=UNBOUNDED, size=size, body_file=body_file)
        return result["rate"], result["requests"]
    with ThreadPoolExecutor(len(targets)) as pool:
        results = list(pool.map(one, enumerate(targets)))
    return sum(r for r, _ in results), sum(n for _, n in results)


def cpu_seconds(node):
    """User + system CPU seconds the node's process has used."""
    with open(f"/proc/{node.process.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(node):
    with open(f"/proc/{node.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="256 MiB round trips per setup")
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "curl") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"install {' '.join(missing)} first (Debian packages of those names)")
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    case = _Case(workdir)
    try:
        single = NodeProcess(case).start()
        cluster = start_cluster(case, 3)
        wait_for(all_alive(cluster), "three nodes converge")
        single_client = single.client(signature_version="s3v4")
        clients = [node.client(signature_version="s3v4") for node in cluster]
        single_client.create_bucket(Bucket="bench")
        clients[0].create_bucket(Bucket="bench")
        for client in clients:
            wait_for(lambda c=client: c.head_bucket(Bucket="bench"), "the bucket everywhere")
        # Every key exists before the first GET, whatever the PUT runs cover.
        with ThreadPoolExecutor(8) as pool:
            for client in (single_client, clients[0]):
                list(pool.map(lambda k, c=client: c.put_object(Bucket="bench", Key=k,
                                                               Body=b"z" * 4096), KEYS))
        setups = {"single": [(single, single_client)],
                  "cluster, via node 0": [(cluster[0], clients[0])],
                  "cluster, spread": list(zip(cluster, clients))}
        servers = {"single": [single], "cluster, via node 0": cluster,
                   "cluster, spread": cluster}
        body_file = os.path.join(workdir, "body.bin")
        with open(body_file, "wb") as f:
            f.write(os.urandom(4096))
        rates = {setup: {} for setup in setups}
        cpu = {setup: {} for setup in setups}  # µs of server CPU per request, per node
        for operation in OPERATIONS:
            for setup, targets in setups.items():
                before = [cpu_seconds(node) for node in servers[setup]]
                per_second, answered = rate(targets, operation, workdir, args.seconds,
                                            body_file)
                rates[setup][operation[0]] = per_second
                cpu[setup][operation[0]] = [
                    (cpu_seconds(node) - used) * 1e6 / answered
                    for node, used in zip(servers[setup], before)]
                print(f"{setup}: {operation[0]} {per_second:.0f}/s, server CPU µs/request "
                      f"{[round(c) for c in cpu[setup][operation[0]]]}", file=sys.stderr)
        big = os.path.join(workdir, "big.bin")
        samples = {"single": [], "cluster": []}
        for _ in range(args.runs):
            samples["single"].append(transfer(single, single_client, big, 256 * MiB, False))
            samples["cluster"].append(transfer(cluster[0], clients[0], big, 256 * MiB, False))
        print(f"256 MiB (PUT, GET) MiB/s: {samples}", file=sys.stderr)
        rss = {"single": peak_rss_mib(single)}
        rss.update({node.id: peak_rss_mib(node) for node in cluster})
    finally:
        case.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    def ratio(value, base):
        return f"{value:,.0f} ({value / base:.0%})"
    print("| operation | single node | cluster via node 0 | cluster spread over 3 |")
    print("| --- | --- | --- | --- |")
    for name, *_ in OPERATIONS:
        base = rates["single"][name]
        print(f"| {name} c={CONNECTIONS} | {base:,.0f}/s | "
              f"{ratio(rates['cluster, via node 0'][name], base)}/s | "
              f"{ratio(rates['cluster, spread'][name], base)}/s |")
    for index, direction in enumerate(("PUT", "GET")):
        base = statistics.median(s[index] for s in samples["single"])
        value = statistics.median(s[index] for s in samples["cluster"])
        print(f"| 256 MiB {direction} | {base:,.0f} MiB/s | {ratio(value, base)} MiB/s | - |")
    print("\nServer CPU per request, µs (user + system; the cluster's as node 0 / 1 / 2, "
          "and their sum):\n")
    print("| operation | single node | cluster via node 0 | cluster spread over 3 |")
    print("| --- | --- | --- | --- |")
    for name, *_ in OPERATIONS:
        cells = [f"{cpu['single'][name][0]:,.0f}"]
        for setup in ("cluster, via node 0", "cluster, spread"):
            each = cpu[setup][name]
            cells.append(" / ".join(f"{c:,.0f}" for c in each) + f" (sum {sum(each):,.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nPeak RSS (VmHWM) over the run: "
          + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in rss.items()))
    print(f"\n{os.cpu_count()} cores shared by all four nodes and the load generators; "
          f"{args.seconds} s wrk runs; 256 MiB: median of {args.runs} round-robin runs.")


if __name__ == "__main__":
    main()
