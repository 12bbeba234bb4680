"""What metrics and the access log cost the S3 hot path: 4 KiB GET ops/s
at concurrency 32 against nodes started side by side in one run,
metrics off (twice: the second is a control), metrics on (a token set),
and metrics on with --access-log, loaded one at a time in interleaved
rounds (each setting in each place of the order in turn) so that the
shared machine's drift falls on all of them alike.

    python benchmarks/metrics_cost.py [--seconds 10] [--rounds 3]

Prints each round and, for each setting, the median ops/s and the node's
CPU time per request (user + system, from /proc). On a machine shared with
other work both swing with the neighbours' load, so it first measures the
same three settings in this process, where only the S3 pipeline runs: a
4 KiB GET through S3Site and S3Api over a StringTransport, the handler
answering from memory (no disk, no metadata: the smallest request there
is, so the hook's share of it is an upper bound), in alternating batches
timed with the process's own CPU clock. Last, paired runs load the
metrics-off node and one of the others at the same time, one wrk each:
whatever the neighbours do then falls on both at once, and the ratio of
the two rates is the cost; a second metrics-off node paired the same way
shows how far that method strays by itself. docs/operations.md records
the figures. Uses wrk through :mod:`benchmarks.loadgen` (install
it with ``apt-get install wrk``); everything listens on 127.0.0.1 and
everything started is stopped again.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.loadgen import run_wrk  # noqa: E402
from benchmarks.presign import Presigner  # noqa: E402
from benchmarks.servers import _Case  # noqa: E402
from tests.nodeprocess import NodeProcess  # noqa: E402

SIZE = 4096
KEYS = 200
BUCKET = "bench"


def start(workdir, name, env, args):
    node = NodeProcess(_Case(os.path.join(workdir, name)), env=env, args=args)
    node.start()
    access, secret = node.credentials()
    node.presigner = Presigner(f"127.0.0.1:{node.port}", access, secret)
    s3 = node.client(signature_version="s3v4")
    s3.create_bucket(Bucket=BUCKET)
    body = os.urandom(SIZE)
    for i in range(KEYS):
        s3.put_object(Bucket=BUCKET, Key=f"k{i:04d}", Body=body)
    return node


def pipeline_cost(batches=15, per_batch=2000):
    """{setting: median µs of CPU per in-process 4 KiB GET}."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from z4node.s3 import api as s3api
    from z4node.s3.api import Response, S3Api, S3Resource
    from z4node.s3.http import S3Site
    from z4node.web.accesslog import AccessLog
    from z4node.web.metrics import NodeMetrics

    body = os.urandom(SIZE)

    async def get_object(api, call):
        return Response(200, {"content-type": "application/octet-stream"}, body)

    class System:
        def secret_for(self, access_key_id):
            return None

    # Unsigned requests, allowed: what is measured is the pipeline around
    # the handler, not the signature check (the same in every setting).
    s3api.authorization.authorize = lambda api, call: succeed(None)
    clock = Clock()
    api = S3Api(clock, types.SimpleNamespace(system=System()),
                {"GetObject": get_object}, None)
    metrics = NodeMetrics(clock, "bench")
    with tempfile.TemporaryDirectory(prefix="z4-metrics-cost-") as workdir:
        access_log = AccessLog(os.path.join(workdir, "access.log"), clock)

        def both(*args):
            metrics.answered(*args)
            access_log.answered(*args)
        hooks = {"metrics off": None, "metrics on": metrics.answered,
                 "metrics on + access log": both}
        site = S3Site(S3Resource(api, None), timeout=None)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        request = b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        costs = {name: [] for name in hooks}
        for batch in range(batches + 1):
            for name, hook in hooks.items():
                api.answered = hook
                started = time.process_time()
                for _ in range(per_batch):
                    protocol.dataReceived(request)
                    transport.clear()
                if batch:  # the first batch warms up
                    costs[name].append((time.process_time() - started) / per_batch * 1e6)
                access_log.flush()
        access_log.close()
    return {name: statistics.median(values) for name, values in costs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    in_process = pipeline_cost()
    for name, cost in in_process.items():
        print(f"in process: {name:24} {cost:6.1f} µs CPU/GET "
              f"({(cost / in_process['metrics off'] - 1) * 100:+5.1f} %)", flush=True)
    with tempfile.TemporaryDirectory(prefix="z4-metrics-cost-") as workdir:
        settings = {
            "metrics off": ({}, []),
            # The control: a second node just like the first. Paired with
            # it, the first shows how far the method alone strays.
            "metrics off (control)": ({}, []),
            "metrics on": ({"Z4_METRICS_TOKEN": "benchmark-token"}, []),
            "metrics on + access log": ({"Z4_METRICS_TOKEN": "benchmark-token"},
                                        ["--access-log", os.path.join(workdir, "access.log")]),
        }
        nodes = {}
        try:
            for name, (env, extra) in settings.items():
                nodes[name] = start(workdir, name.replace(" ", "_").replace("+", ""),
                                    env, extra)
            rates = {name: [] for name in settings}
            cpu = {name: [] for name in settings}
            names = list(nodes)

            def load(name, run, seconds):
                node = nodes[name]
                paths = [node.presigner.path("GET", f"/{BUCKET}/k{i:04d}")
                         for i in range(KEYS)]
                return run_wrk(node.endpoint, "GET", paths, workdir,
                               f"{run}-{name}".replace(" ", "_").replace("+", ""),
                               connections=32, seconds=seconds, limit=10 ** 9,
                               expect_length=SIZE)
            for name in names:
                load(name, "warm-up", 2)  # not counted: caches, first connections
            for round_ in range(args.rounds):
                # Each setting takes each place in the order in turn: the
                # first run of a round was seen to differ from the last.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    process = psutil.Process(nodes[name].process.pid)
                    before = sum(process.cpu_times()[:2])
                    r = load(name, f"r{round_}", args.seconds)
                    used = sum(process.cpu_times()[:2]) - before
                    rates[name].append(r["rate"])
                    cpu[name].append(used / r["requests"] * 1e6)
                    print(f"round {round_ + 1}: {name:24} {r['rate']:9,.1f} GET/s  "
                          f"p99 {r['p99_ms']:7.2f} ms  {cpu[name][-1]:6.1f} µs CPU/request",
                          flush=True)
            ratios = {name: [] for name in names[1:]}
            with ThreadPoolExecutor(2) as pool:
                for round_ in range(args.rounds):
                    for name in names[1:]:
                        off = pool.submit(load, names[0], f"p{round_}-off", args.seconds)
                        on = pool.submit(load, name, f"p{round_}", args.seconds)
                        ratio = on.result()["rate"] / off.result()["rate"]
                        ratios[name].append(ratio)
                        print(f"paired {round_ + 1}: {name:24} {(ratio - 1) * 100:+5.1f} % "
                              f"GET/s beside metrics off", flush=True)
        finally:
            for node in nodes.values():
                node.stop()
    for name, values in ratios.items():
        print(f"paired: {name:24} median {(statistics.median(values) - 1) * 100:+5.1f} % "
              f"GET/s beside metrics off")
    base = statistics.median(rates["metrics off"])
    base_cpu = statistics.median(cpu["metrics off"])
    for name, values in rates.items():
        median = statistics.median(values)
        median_cpu = statistics.median(cpu[name])
        print(f"{name:24} median {median:9,.1f} GET/s ({(median / base - 1) * 100:+5.1f} %)"
              f"  {median_cpu:6.1f} µs CPU/request ({(median_cpu / base_cpu - 1) * 100:+5.1f} %)")


if __name__ == "__main__":
    main()
