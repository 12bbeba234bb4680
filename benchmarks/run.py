"""Benchmark z4node against moto and nginx, side by side, and write
docs/performance.md.

    python benchmarks/run.py                 # from the repository root

One run measures each server in turn (only one runs at a time), all on
127.0.0.1:

- 4 KiB PUT, GET, HEAD and DELETE at concurrency 1 (p50/p99 latency) and
  32 (ops/s, p99): wrk replays precomputed presigned URLs
  (:mod:`benchmarks.loadgen`);
- LIST of a 1,000-key prefix, one page per request (pages/s); for nginx
  the ``autoindex`` of a 1,000-file directory;
- 1 MiB PUT and GET (ops/s, MB/s) with wrk at concurrency 8;
- one 256 MiB PUT and GET with curl (MB/s);
- each server's peak RSS over its whole run (the kernel's VmHWM).

A run with any failed request (an answer outside 2xx, a short body, a
socket error or timeout) stops the benchmark with the error and writes no
report. Everything the runner starts it stops again, also on Ctrl-C.

It installs what it needs first (see :mod:`benchmarks.setup_tools`).
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import setup_tools  # noqa: E402

MiB = 1024 * 1024
BIG_SIZE = 256 * MiB
SMALL_SIZE = 4096
MIB_KEYS = 1000  # distinct 1 MiB keys, cycled when a server writes more
FOREVER = 10 ** 9  # "no count bound" for runs that cycle their keys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="time bound of each wrk run (default 4)")
    parser.add_argument("--keys", type=int, default=100_000,
                        help="count bound of each 4 KiB PUT run: distinct keys (default 100000)")
    parser.add_argument("--read-keys", type=int, default=20_000,
                        help="distinct keys the GET and HEAD runs cycle through (default 20000)")
    parser.add_argument("--mib-connections", type=int, default=8,
                        help="concurrency of the 1 MiB runs (default 8)")
    parser.add_argument("--servers", default="z4node,moto,nginx",
                        help="comma-separated subset, for trying the harness (default: all)")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "performance.md"),
                        help="the report (default docs/performance.md)")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--profile", metavar="DIR",
                        help="record py-spy profiles of z4node under the 4 KiB PUT and GET "
                             "loads at concurrency 32 into DIR; writes no report (the profiler "
                             "slows the node)")
    parser.add_argument("--gil", action="store_true",
                        help="with --profile: sample only the thread holding the GIL "
                             "(where Python time goes), not every thread's wall time")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    return args


def progress(text):
    print(text, file=sys.stderr, flush=True)


class Context:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.body_file = os.path.join(workdir, "body.bin")
        self.big_file = os.path.join(workdir, "big.bin")
        write_random(self.body_file, MiB)
        write_random(self.big_file, BIG_SIZE)


def write_random(path, size):
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))


def measure(server, ctx):
    from benchmarks.loadgen import curl_transfer, run_wrk
    from benchmarks.servers import LIST_PREFIX

    args = ctx.args
    seconds = args.seconds
    results = {}

    def wrk(name, method, targets, **kw):
        started = time.monotonic()
        profiler = None
        if args.profile and server.name == "z4node" and name in ("PUT 4 KiB c=32",
                                                                 "GET 4 KiB c=32"):
            profiler = start_profile(server, name, seconds, args.profile, args.gil)
        try:
            r = run_wrk(server.endpoint, method, targets, ctx.workdir,
                        f"{server.name}-{name}".replace(" ", "_").replace("=", ""), **kw)
        finally:
            if profiler is not None:
                finish_profile(profiler)
        results[name] = r
        progress(f"  {server.name:7} {name:22} {r['rate']:10,.1f}/s  p50 {r['p50_ms']:8.2f} ms"
                 f"  p99 {r['p99_ms']:8.2f} ms  ({r['requests']} requests, "
                 f"{time.monotonic() - started:.1f} s with set-up)")
        return r

    def targets(method, keys):
        return [server.object_target(method, key) for key in keys]

    # 4 KiB PUT: fresh keys, one per request; what was written is then read,
    # listed and deleted.
    written = {}
    for c in (1, 32):
        keys = [f"small{c}/{i:07d}" for i in range(args.keys)]
        r = wrk(f"PUT 4 KiB c={c}", "PUT", targets("PUT", keys), connections=c,
                seconds=seconds, size=SMALL_SIZE, body_file=ctx.body_file)
        written[c] = keys[:r["requests"]]
    readable = (written[32] + written[1])[:args.read_keys]
    for method in ("GET", "HEAD"):
        paths = targets(method, readable)
        for c in (1, 32):
            wrk(f"{method} 4 KiB c={c}", method, paths, connections=c, seconds=seconds,
                limit=FOREVER, expect_length=SMALL_SIZE if method == "GET" else -1)

    # LIST: a prefix of exactly 1,000 keys, one page each request.
    list_keys = [f"{LIST_PREFIX}{i:04d}" for i in range(1000)]
    r = run_wrk(server.endpoint, "PUT", targets("PUT", list_keys), ctx.workdir,
                f"{server.name}-list-fill", connections=32, seconds=300, size=SMALL_SIZE,
                body_file=ctx.body_file)
    assert r["requests"] == 1000, r
    list_target = server.list_target()
    with urllib.request.urlopen(server.endpoint + list_target, timeout=60) as answer:
        listed = server.list_count(answer.read())
    if listed != 1000:
        raise RuntimeError(f"{server.name}: a LIST of {LIST_PREFIX} shows {listed} keys, not 1000")
    for c in (1, 32):
        wrk(f"LIST 1,000 keys c={c}", "GET", [list_target], connections=c, seconds=seconds,
            limit=FOREVER)

    # DELETE: each URL once, so each deletes an object the PUT runs wrote.
    # Where deleting may be much faster than writing was (nginx), the PUT
    # runs left too few keys for a DELETE run of full length; an unmeasured
    # fill writes more, up to what a HEAD run at the same concurrency
    # managed in the time (a DELETE is no faster than a HEAD), in at most
    # 1.5 times the run time.
    for c in (1, 32):
        wanted = min(args.keys, int(results[f"HEAD 4 KiB c={c}"]["rate"] * seconds))
        if wanted > len(written[c]):
            keys = [f"fill{c}/{i:07d}" for i in range(wanted - len(written[c]))]
            r = run_wrk(server.endpoint, "PUT", targets("PUT", keys), ctx.workdir,
                        f"{server.name}-fill{c}", connections=32, seconds=seconds * 1.5,
                        size=SMALL_SIZE, body_file=ctx.body_file)
            written[c] = written[c] + keys[:r["requests"]]
    for c in (1, 32):
        wrk(f"DELETE 4 KiB c={c}", "DELETE", targets("DELETE", written[c]), connections=c,
            seconds=seconds)

    # 1 MiB objects.
    c = args.mib_connections
    keys = [f"mib/{i:05d}" for i in range(MIB_KEYS)]
    r = wrk(f"PUT 1 MiB c={c}", "PUT", targets("PUT", keys), connections=c, seconds=seconds,
            limit=FOREVER, size=MiB, body_file=ctx.body_file)
    wrk(f"GET 1 MiB c={c}", "GET", targets("GET", keys[:min(r["requests"], MIB_KEYS)]),
        connections=c, seconds=seconds, limit=FOREVER, expect_length=MiB)

    # One 256 MiB object, one stream.
    for method in ("PUT", "GET"):
        r = curl_transfer(method, server.url(method, "big/object"), ctx.big_file, BIG_SIZE)
        results[f"{method} 256 MiB"] = r
        progress(f"  {server.name:7} {method + ' 256 MiB':22} {r['mb_per_s']:10,.1f} MB/s")

    results["peak RSS"] = server.peak_rss()
    progress(f"  {server.name:7} {'peak RSS':22} {results['peak RSS'] / MiB:10,.1f} MiB")
    return results


def start_profile(server, name, seconds, directory, gil=False):
    setup_tools.ensure_py_spy()
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, name.split()[0].lower() + "-4k-c32" + ("-gil" if gil else ""))
    pid = server.processes()[0].pid
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    command = [py_spy, "record", "--pid", str(pid), "--rate", "200", "--threads",
               "--format", "raw", "--output", base + ".txt", "--duration", str(int(seconds) + 1)]
    if gil:
        command.append("--gil")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # py-spy attaches
    return process, base


def finish_profile(profiler):
    from benchmarks.profile_summary import summarize

    process, base = profiler
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        process.wait(10)
    if os.path.exists(base + ".txt"):
        summary = summarize(base + ".txt")
        with open(base + ".summary.txt", "w") as f:
            f.write(summary)
        progress(summary)


def machine():
    import platform

    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(command, pick=lambda text: text.splitlines()[0]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return pick((done.stdout + done.stderr).strip())
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import moto

    # The node's code, not the benchmark's: local edits to benchmarks/ do
    # not change what was measured.
    git = version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    if version(["git", "-C", ROOT, "status", "--porcelain", "--", "z4node", "twisted",
                "setup.py"], pick=lambda text: text):
        git += ", with uncommitted changes to the node's code"
    return {
        "cpu": f"{os.cpu_count()} × {model}",
        "memory": f"{psutil.virtual_memory().total / 1024 ** 3:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": version(["wrk", "-v"]).split(" [")[0],
        "curl": " ".join(version(["curl", "--version"]).split()[:2]),
        "moto": moto.__version__,
        "z4node": git,
    }


def filesystem(path):
    """(device, type) of the filesystem holding ``path``."""
    path = os.path.realpath(path)
    best = ("?", "?", "")
    with open("/proc/mounts") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) \
                    and len(mount) >= len(best[2]):
                best = (device, fstype, mount)
    return best[0], best[1]


def main(argv=None):
    args = parse_args(argv)
    setup_tools.ensure_all()

    from benchmarks.loadgen import LoadError
    from benchmarks.report import write_report
    from benchmarks.servers import SERVERS

    unknown = [name for name in args.servers if name not in SERVERS]
    if unknown:
        sys.exit(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    if args.profile:
        args.servers = ["z4node"]

    # SIGTERM (and SIGHUP) end the run like Ctrl-C: the finally blocks
    # below stop every process started.
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    # Ctrl-C: KeyboardInterrupt, even where the shell started us with
    # SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    command = "python benchmarks/run.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    parent = os.environ.get("TMPDIR", "/var/tmp")
    workdir = tempfile.mkdtemp(prefix="z4bench-", dir=parent)
    started = time.monotonic()
    info = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "filesystem": "{} ({})".format(*filesystem(workdir)),
        "load_before": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k not in ("output", "json")},
        "durability": {name: cls.durable for name, cls in SERVERS.items()},
    }
    results = {}
    try:
        ctx = Context(args, workdir)
        for name in args.servers:
            server = SERVERS[name](workdir)
            progress(f"{name}: starting")
            try:
                server.start()
                results[name] = measure(server, ctx)
            except LoadError as e:
                sys.exit(f"{name}: a run had errors, so there is no report:\n{e}\n"
                         f"{server.log_tail()}")
            finally:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info["load_after"] = os.getloadavg()
    info["seconds"] = time.monotonic() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    if args.profile:
        progress(f"profiles in {args.profile}; no report written (the profiler slows the node)")
        return
    text = write_report(results, info, args.output)
    print(text)
    progress(f"wrote {args.output} in {info['seconds']:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every server and load generator started was stopped")
