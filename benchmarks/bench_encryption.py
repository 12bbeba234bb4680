"""What encryption costs: one node's throughput with and without it.

    python benchmarks/bench_encryption.py      # from the repository root

For each configuration -- plain HTTP, encryption at rest (SSE-S3), TLS,
TLS with encryption at rest, and SSE-C over TLS on an encrypted node --
starts a real ``twistd z4node`` on loopback and measures a 256 MiB PUT and
GET with curl (median of ``--runs``, taken round robin across the
configurations so that other load on the machine falls on all alike), and for the first two also 4 KiB
PUT/GET rates with wrk at concurrency 32 (inline objects: the small-object
path where encryption is a larger share of the work). Prints a Markdown
table; docs/security.md quotes it.
"""

import argparse
import base64
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.nodeprocess import NodeProcess  # noqa: E402

MiB = 1024 * 1024
NODE_KEY = {"Z4_ENCRYPTION_KEY": "5e" * 32}
CUSTOMER_KEY = hashlib.sha256(b"bench").digest()


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


def write_file(path, size):
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block[:-1] + os.urandom(1))


def presigned_paths(client, method, bucket, keys):
    operation = {"PUT": "put_object", "GET": "get_object"}[method]
    prefix = client.meta.endpoint_url
    return [client.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": k},
                                          ExpiresIn=3600)[len(prefix):] for k in keys]


def run_wrk(endpoint, method, paths, size, connections, seconds, workdir):
    """Requests a second of wrk replaying ``paths``; every answer must be 2xx."""
    paths_file = os.path.join(workdir, f"paths-{method}-{connections}.txt")
    with open(paths_file, "w") as f:
        f.write("\n".join(paths) + "\n")
    script = os.path.join(workdir, f"{method}-{connections}.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % {"paths": paths_file, "size": size, "method": method,
                              "body": "body" if method == "PUT" else "nil"})
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, endpoint],
        capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{method} at c={connections}: {errors.group(1)} failed requests")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))



def ssec_headers():
    return {"x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key":
                base64.b64encode(CUSTOMER_KEY).decode(),
            "x-amz-server-side-encryption-customer-key-MD5":
                base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()}


def transfer(node, client, path, size, ssec):
    """(PUT MiB/s, GET MiB/s) of one round trip of fresh content."""
    params = {"Bucket": "bench", "Key": "big"}
    curl = ["curl", "-sf", "-o", "/dev/null"]
    if node.tls:
        curl += ["--cacert", node.tls[0]]
    if ssec:
        params.update(SSECustomerAlgorithm="AES256", SSECustomerKey=CUSTOMER_KEY)
        for name, value in ssec_headers().items():
            curl += ["-H", f"{name}: {value}"]
    # Fresh content each time: a second PUT of the same bytes would find
    # every chunk stored already (deduplication) and write nothing.
    write_file(path, size)
    put_url = client.generate_presigned_url("put_object", Params=params)
    get_url = client.generate_presigned_url("get_object", Params=params)
    start = time.monotonic()
    subprocess.run(curl + ["-T", path, put_url], check=True)
    put = size / MiB / (time.monotonic() - start)
    start = time.monotonic()
    subprocess.run(curl + [get_url], check=True)
    return put, size / MiB / (time.monotonic() - start)


def small_rates(node, client, workdir, seconds):
    keys = [f"small/{i:05d}" for i in range(2000)]
    put_paths = presigned_paths(client, "PUT", "bench", keys)
    get_paths = presigned_paths(client, "GET", "bench", keys)
    put = run_wrk(node.endpoint, "PUT", put_paths, 4096, 32, seconds, workdir)
    # Every key is there: a 5 s PUT run at c=32 covers 2,000 keys many times.
    get = run_wrk(node.endpoint, "GET", get_paths, 0, 32, seconds, workdir)
    return put, get


CONFIGURATIONS = [
    # name, node environment, TLS, SSE-C, measure 4 KiB rates
    ("HTTP, no encryption", {}, False, False, True),
    ("HTTP, encryption at rest (SSE-S3)", NODE_KEY, False, False, True),
    ("HTTPS, no encryption", {}, True, False, False),
    ("HTTPS, encryption at rest (SSE-S3)", NODE_KEY, True, False, False),
    ("HTTPS, SSE-C on an encrypted node", NODE_KEY, True, True, False),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="256 MiB round trips per config")
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    args = parser.parse_args()
    missing = [tool for tool in ("wrk", "curl") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"install {' '.join(missing)} first (Debian packages of those names)")
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    case = _Case(workdir)
    nodes = []
    try:
        big = os.path.join(workdir, "big.bin")
        for name, env, tls, ssec, small in CONFIGURATIONS:
            node = NodeProcess(case, env=env, tls=tls).start()
            client = node.client(signature_version="s3v4")
            client.create_bucket(Bucket="bench")
            nodes.append((node, client))
        # Round robin, so that load from other work on the machine falls on
        # every configuration alike; the median of the rounds is reported.
        samples = [[] for _ in CONFIGURATIONS]
        for _ in range(args.runs):
            for (node, client), config, out in zip(nodes, CONFIGURATIONS, samples):
                out.append(transfer(node, client, big, 256 * MiB, config[3]))
        rows = []
        for (node, client), config, out in zip(nodes, CONFIGURATIONS, samples):
            name, small = config[0], config[4]
            rates = small_rates(node, client, workdir, args.seconds) if small else None
            put = statistics.median(p for p, _ in out)
            get = statistics.median(g for _, g in out)
            rows.append((name, put, get, rates))
            print(f"{name}: PUT {[round(p) for p, _ in out]} MiB/s, "
                  f"GET {[round(g) for _, g in out]} MiB/s"
                  + (f", 4 KiB PUT {rates[0]:.0f}/s GET {rates[1]:.0f}/s" if rates else ""),
                  file=sys.stderr)
    finally:
        case.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print("| configuration | 256 MiB PUT | 256 MiB GET | 4 KiB PUT c=32 | 4 KiB GET c=32 |")
    print("| --- | --- | --- | --- | --- |")
    for name, put, get, rates in rows:
        small = (f"{rates[0]:,.0f}/s | {rates[1]:,.0f}/s" if rates else "- | -")
        print(f"| {name} | {put:.0f} MiB/s | {get:.0f} MiB/s | {small} |")
    print(f"\n{os.cpu_count()} cores; median of {args.runs} round-robin runs; curl and wrk on loopback.")


if __name__ == "__main__":
    main()
