"""What replication costs: a 3-node cluster beside a single node, in one run.

    python benchmarks/cluster.py      # from the repository root

Starts one single node and a cluster of three (every one a real ``twistd
z4node`` on 127.0.0.1, all sharing this machine's cores with the load
generators) and measures, on each:

- 4 KiB PUT and GET and ListObjectsV2 (100 keys a page) rates with
  wrk at concurrency 32: on the single node, on the cluster through node 0,
  and on the cluster spread over its three nodes (three wrk, 11 connections
  each, rates summed); HEAD is not measured (wrk waits for the body a
  HEAD answer announces and counts no request);
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

from benchmarks.bench_encryption import _Case, run_wrk, transfer  # noqa: E402
from tests.nodeprocess import NodeProcess  # noqa: E402
from tests.test_cluster_processes import all_alive, start_cluster  # noqa: E402

MiB = 1024 * 1024
KEYS = [f"small/{i:05d}" for i in range(1000)]
CONNECTIONS = 32

# operation name, HTTP method, boto3 operation, extra parameters, PUT body size
OPERATIONS = [
    ("4 KiB PUT", "PUT", "put_object", {}, 4096),
    ("4 KiB GET", "GET", "get_object", {}, 0),
    ("LIST (100 keys)", "GET", "list_objects_v2", {"Prefix": "small/", "MaxKeys": 100}, 0),
]


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


def rate(targets, operation, workdir, seconds):
    """Requests a second of ``operation`` over ``targets`` ((node, client)
    pairs), the connections split evenly among them and the rates summed."""
    name, method, boto_operation, params, size = operation
    each = max(1, CONNECTIONS // len(targets))

    def one(index_target):
        index, (node, client) = index_target
        directory = os.path.join(workdir, f"wrk-{index}")
        os.makedirs(directory, exist_ok=True)
        return run_wrk(node.endpoint, method, paths_for(client, boto_operation, params),
                       size, each, seconds, directory)
    with ThreadPoolExecutor(len(targets)) as pool:
        return sum(pool.map(one, enumerate(targets)))


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
        rates = {setup: {} for setup in setups}
        for operation in OPERATIONS:
            for setup, targets in setups.items():
                rates[setup][operation[0]] = rate(targets, operation, workdir, args.seconds)
                print(f"{setup}: {operation[0]} {rates[setup][operation[0]]:.0f}/s",
                      file=sys.stderr)
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
    print("\nPeak RSS (VmHWM) over the run: "
          + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in rss.items()))
    print(f"\n{os.cpu_count()} cores shared by all four nodes and the load generators; "
          f"{args.seconds} s wrk runs; 256 MiB: median of {args.runs} round-robin runs.")


if __name__ == "__main__":
    main()
