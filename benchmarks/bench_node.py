"""Benchmark one z4node on this machine and write docs/performance.md.

    python benchmarks/bench_node.py            # from the repository root

Starts a real ``twistd z4node`` on loopback, then measures:

- 4 KiB PUT and GET: wrk replays precomputed presigned URLs (a C load
  generator, so the 2-core machine spends its CPU on the server, not on
  signing requests), at concurrency 1 (p50/p99 latency) and 32 (ops/s);
- 256 MiB PUT and GET: curl streams the object (MB/s);
- the server's peak RSS across the run and during a 1 GiB PUT + GET.

wrk and curl come from Debian's packages; the script installs them with
apt-get when they are missing and it runs as root.
"""

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.nodeprocess import NodeProcess  # noqa: E402

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local body = string.rep("z", %(size)d)
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("%(method)s", paths[i], nil, %(body)s)
end
"""


class _Case:
    """Stands in for a trial TestCase: temp dirs and cleanups for NodeProcess."""

    def __init__(self, root):
        self.root = root
        self.cleanups = []
        self.count = 0

    def mktemp(self):
        self.count += 1
        return os.path.join(self.root, f"node{self.count}")

    def addCleanup(self, fn, *args):
        self.cleanups.append((fn, args))

    def cleanup(self):
        for fn, args in reversed(self.cleanups):
            fn(*args)


def ensure_tools():
    missing = [tool for tool in ("wrk", "curl") if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"install {' '.join(missing)} (Debian packages) first")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


class PeakRss:
    def __init__(self, pid):
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def presigned_paths(client, method, bucket, keys):
    operation = {"PUT": "put_object", "GET": "get_object"}[method]
    prefix = client.meta.endpoint_url
    return [client.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": k},
                                          ExpiresIn=3600)[len(prefix):] for k in keys]


def run_wrk(endpoint, method, paths, size, connections, seconds, workdir):
    paths_file = os.path.join(workdir, f"paths-{method}-{connections}.txt")
    with open(paths_file, "w") as f:
        f.write("\n".join(paths) + "\n")
    script = os.path.join(workdir, f"{method}-{connections}.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % {"paths": paths_file, "size": size, "method": method,
                              "body": "body" if method == "PUT" else "nil"})
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, endpoint],
        capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{method} at c={connections}: {errors.group(1)} failed requests\n{out}")
    return rate, latency


def _ms(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def big_transfer(client, bucket, key, path, size):
    put_url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
    get_url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    start = time.monotonic()
    subprocess.run(["curl", "-sf", "-o", "/dev/null", "-T", path, put_url], check=True)
    put = size / MiB / (time.monotonic() - start)
    start = time.monotonic()
    subprocess.run(["curl", "-sf", "-o", "/dev/null", get_url], check=True)
    get = size / MiB / (time.monotonic() - start)
    return put, get


def write_file(path, size):
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block[:-1] + os.urandom(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--keys", type=int, default=20000, help="distinct 4 KiB keys")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "performance.md"))
    args = parser.parse_args()
    ensure_tools()
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    case = _Case(workdir)
    try:
        results = measure(case, workdir, args)
    finally:
        case.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    write_report(results, args)


def measure(case, workdir, args):
    node = NodeProcess(case).start()
    client = node.client(signature_version="s3v4")
    client.create_bucket(Bucket="bench")
    run_rss = PeakRss(node.process.pid)
    results = {}
    keys = [f"small/{i:06d}" for i in range(args.keys)]
    put_paths = presigned_paths(client, "PUT", "bench", keys)
    get_paths = presigned_paths(client, "GET", "bench", keys)
    for connections in (1, 32):
        rate, latency = run_wrk(node.endpoint, "PUT", put_paths, 4096, connections,
                                args.seconds, workdir)
        results[f"PUT 4 KiB c={connections}"] = (rate, latency)
    for connections in (1, 32):
        rate, latency = run_wrk(node.endpoint, "GET", get_paths, 0, connections,
                                args.seconds, workdir)
        results[f"GET 4 KiB c={connections}"] = (rate, latency)
    big = os.path.join(workdir, "big.bin")
    write_file(big, 256 * MiB)
    results["256 MiB"] = big_transfer(client, "bench", "big", big, 256 * MiB)
    os.unlink(big)
    write_file(big, 1024 * MiB)
    gib_rss = PeakRss(node.process.pid)
    baseline = psutil.Process(node.process.pid).memory_info().rss
    results["1 GiB"] = big_transfer(client, "bench", "gib", big, 1024 * MiB)
    results["1 GiB RSS"] = (baseline, gib_rss.stop())
    results["run RSS"] = run_rss.stop()
    node.stop()
    return results


def write_report(results, args):
    def small(name):
        rate, latency = results[name]
        return f"| {name} | {rate:,.0f} ops/s | {latency['50']:.2f} ms | {latency['99']:.2f} ms |"

    put256, get256 = results["256 MiB"]
    put1g, get1g = results["1 GiB"]
    baseline, peak = results["1 GiB RSS"]
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Performance",
        "",
        "Measured by `benchmarks/bench_node.py` on this project's machine "
        f"({os.cpu_count()} cores, {psutil.virtual_memory().total / 1024 ** 3:.0f} GiB, "
        f"{cpu}, Python {platform.python_version()}), one node, loopback, durable writes "
        "(every PUT fsynced before its answer). Reproduce with:",
        "",
        "```sh",
        "python benchmarks/bench_node.py      # needs wrk and curl (installed if root)",
        "```",
        "",
        f"Small objects: wrk replays presigned SigV4 URLs ({args.keys:,} distinct keys), "
        f"{args.seconds} s per row, one wrk thread.",
        "",
        "| operation | throughput | p50 | p99 |",
        "| --- | --- | --- | --- |",
        small("PUT 4 KiB c=1"), small("PUT 4 KiB c=32"),
        small("GET 4 KiB c=1"), small("GET 4 KiB c=32"),
        "",
        "Large objects, one stream with curl:",
        "",
        "| object | PUT | GET |",
        "| --- | --- | --- |",
        f"| 256 MiB | {put256:,.0f} MB/s | {get256:,.0f} MB/s |",
        f"| 1 GiB | {put1g:,.0f} MB/s | {get1g:,.0f} MB/s |",
        "",
        f"Server memory: {baseline / MiB:.0f} MiB RSS before the 1 GiB PUT and GET, "
        f"{peak / MiB:.0f} MiB at their peak; {results['run RSS'] / MiB:.0f} MiB peak "
        "over the whole run.",
        "",
    ]
    with open(args.output, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
