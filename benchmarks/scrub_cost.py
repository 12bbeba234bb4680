"""What scrubbing costs clients: 4 KiB GET latency with the scrubber idle
and while it reads the store, and the rate it reads at.

    python -m benchmarks.scrub_cost [--objects 150] [--rate 8] [--seconds 8]

Starts one node (``--scrub-rate RATE``) on 127.0.0.1, fills it with
``--objects`` objects of 4 MiB (one chunk file each), then runs wrk against
a 4 KiB object at concurrency 1 and 8 twice: once with no pass under way,
once right after ``z4 scrub start``. Prints p50/p99 and ops/s of each, and
the bytes the scrubber verified per second during the loaded runs. Uses
wrk like benchmarks/run.py (installed by benchmarks/setup_tools).
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import setup_tools  # noqa: E402
from benchmarks.loadgen import run_wrk  # noqa: E402
from benchmarks.presign import Presigner  # noqa: E402
from tests.nodeprocess import NodeProcess  # noqa: E402

MiB = 1024 * 1024


class Case:
    """What NodeProcess wants of a test case: a temp dir and cleanups."""

    def __init__(self, base):
        self.base = base
        self.cleanups = []

    def mktemp(self):
        return tempfile.mkdtemp(dir=self.base)

    def addCleanup(self, fn, *args):
        self.cleanups.append((fn, args))

    def close(self):
        for fn, args in reversed(self.cleanups):
            fn(*args)


def scrub_status(node):
    code, out, err = node.z4("scrub", "status", "--json")
    if code:
        raise RuntimeError(err)
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=150)
    parser.add_argument("--rate", type=float, default=8.0, help="--scrub-rate, MB/s")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    setup_tools.ensure_debian()
    with tempfile.TemporaryDirectory() as base:
        case = Case(base)
        try:
            run(case, base, args)
        finally:
            case.close()


def run(case, base, args):
    node = NodeProcess(case, args=["--scrub-rate", str(args.rate)]).start()
    client = node.client()
    client.create_bucket(Bucket="scrub")
    block = os.urandom(4 * MiB)
    for i in range(args.objects):
        # Distinct content per object: a chunk file each.
        client.put_object(Bucket="scrub", Key=f"big/{i}", Body=i.to_bytes(8, "big") + block[8:])
    client.put_object(Bucket="scrub", Key="small", Body=os.urandom(4096))
    access, secret = node.credentials()
    signer = Presigner(f"127.0.0.1:{node.port}", access, secret)
    paths = [signer.path("GET", "/scrub/small")] * 1000
    print(f"{args.objects} chunk files of 4 MiB; --scrub-rate {args.rate:g} MB/s\n")
    print("| scrubber | concurrency | GET ops/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    verified = []
    for state in ("idle", "reading"):
        if state == "reading":
            node.z4("scrub", "start")
            before, started = scrub_status(node)["bytes_verified"], time.monotonic()
        for connections in (1, 8):
            r = run_wrk(node.endpoint, "GET", paths, base, f"scrub-{state}-{connections}",
                        connections=connections, seconds=args.seconds, limit=10 ** 9,
                        expect_length=4096)
            print(f"| {state} | {connections} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} |")
        if state == "reading":
            done = scrub_status(node)["bytes_verified"] - before
            verified.append(done / (time.monotonic() - started))
    print(f"\nscrubber read {verified[0] / 1e6:.1f} MB/s while loaded "
          f"(limit {args.rate:g} MB/s)")


if __name__ == "__main__":
    main()
