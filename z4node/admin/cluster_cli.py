"""``z4 cluster status``, ``members`` and ``hints``: the peer status
endpoints as tables (or the documents, with ``--json``).

Owns: finding the local node through its data directory (``node.json``,
written by the node on start), signing the requests with the admin key
(those endpoints answer admin keys only: ``$Z4_ACCESS_KEY`` and
``$Z4_SECRET_KEY`` if set, as the node reads them, else the
``credentials`` file the node wrote into its data dir), and rendering
``/_z4/status`` (membership, ring, DHT, and the replication view: the
system tables' replication, the peer channel, hints, rebalancing with a
progress bar, scrub and GC),
its hint queues per target node, and ``/_z4/peers``. Reads only; a
blocking urllib call is fine in a CLI.

Follows the ``z4`` command's conventions (``z4node.admin.cli``): the
top-level parser has ``--data`` and ``--json``; each command is
``run(args) -> (result, text)`` and raises :class:`ClusterCliError` for
anything the operator must fix.
"""

import configparser
import hashlib
import hmac
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from z4node.admin.output import size, table
from z4node.s3 import sigv4

# Seconds to wait for the node's answer: it is local and answers from memory.
HTTP_TIMEOUT = 10
# The node accepts any region; this is the one the S3 tools default to.
REGION = "us-east-1"


class ClusterCliError(Exception):
    """Something the operator must fix; printed without a traceback."""


def add_cluster_commands(subparsers, common=None):
    """Add ``cluster status``, ``members`` and ``hints`` to the ``z4`` parser's
    subparsers; each sets ``run``. ``common`` is a parent parser with the
    options every command takes after its name (``--json``). Returns the
    ``cluster`` family's subparsers, for commands that use the admin socket."""
    parents = [] if common is None else [common]
    cluster = subparsers.add_parser("cluster", help="cluster membership and health")
    commands = cluster.add_subparsers(dest="action", required=True)
    commands.add_parser("status", help="this node's cluster health, counters and "
                                       "replication", parents=parents) \
        .set_defaults(run=cluster_status)
    commands.add_parser("members", help="every member this node knows, with its state",
                        parents=parents) \
        .set_defaults(run=cluster_members)
    commands.add_parser("hints", help="the hints this node holds for nodes that were "
                                      "down, per node", parents=parents) \
        .set_defaults(run=cluster_hints)
    return commands


def node_url(data_dir):
    """The base URL of the node whose data directory is ``data_dir``."""
    path = os.path.join(data_dir, "node.json")
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise ClusterCliError(f"{path} not found: is a node running with --data {data_dir}?")
    except (OSError, ValueError) as e:
        raise ClusterCliError(f"cannot read {path}: {e}")
    host = info.get("s3_host") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{info.get('s3_scheme', 'http')}://{host}:{info['s3_port']}"


def admin_key(data_dir):
    """(access key id, secret) of the node's admin key."""
    environ = os.environ
    if environ.get("Z4_ACCESS_KEY") and environ.get("Z4_SECRET_KEY"):
        return environ["Z4_ACCESS_KEY"], environ["Z4_SECRET_KEY"]
    path = os.path.join(data_dir, "credentials")
    parser = configparser.ConfigParser()
    try:
        with open(path) as f:
            parser.read_file(f)
        section = parser["default"]
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    except (OSError, configparser.Error, KeyError) as e:
        raise ClusterCliError(f"no admin key: set Z4_ACCESS_KEY and Z4_SECRET_KEY, or let "
                              f"z4 read {path} ({e})")


def signed_headers(url, key, now):
    """SigV4 headers for a GET of ``url`` (no body) with ``key``, built from
    the node's own canonical forms (``z4node.s3.sigv4``)."""
    parts = urlsplit(url)
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    date = amz_date[:8]
    headers = {"host": parts.netloc, "x-amz-content-sha256": sigv4.EMPTY_SHA256,
               "x-amz-date": amz_date}
    names = sorted(headers)
    canonical_request = "\n".join((
        "GET", sigv4.canonical_uri(parts.path.encode()),
        sigv4.canonical_query(sigv4.parse_query(parts.query.encode())),
        "".join(f"{name}:{headers[name]}\n" for name in names), ";".join(names),
        sigv4.EMPTY_SHA256))
    scope = f"{date}/{REGION}/s3/aws4_request"
    string_to_sign = "\n".join((sigv4.ALGORITHM, amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()))
    signature = hmac.new(sigv4.derive_signing_key(key[1], date, REGION, "s3"),
                         string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"{sigv4.ALGORITHM} Credential={key[0]}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers


def fetch(data_dir, path):
    url = node_url(data_dir) + path
    request = urllib.request.Request(
        url, headers=signed_headers(url, admin_key(data_dir), time.time()))
    # The node was found through its own data dir: its certificate (often
    # for a name, not 127.0.0.1) is not checked.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=context) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            reason = json.load(e).get("error", e.reason)
        except ValueError:
            reason = e.reason
        raise ClusterCliError(f"{url}: {e.code} {reason}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ClusterCliError(f"{url}: {e}")


def address(pair):
    return f"{pair[0]}:{pair[1]}"


def render_members(peers):
    rows = []
    for m in sorted(peers["members"], key=lambda m: (not m.get("self"), m["id"])):
        heard = m.get("last_heard_ago")
        rows.append([
            m["id"] + (" *" if m.get("self") else ""), m["state"], m["incarnation"],
            address(m["s3"]), address(m["gossip"]), m["dht"][1], m["zone"],
            m["capacity"], "-" if heard is None else f"{heard:.1f}s",
        ])
    return table(["ID", "STATE", "INCARNATION", "S3", "GOSSIP", "DHT", "ZONE",
                  "CAPACITY", "LAST HEARD"], rows)


def render_status(status):
    membership = status["membership"]
    dht = status["dht"]
    counts = membership["members"]
    rows = [
        ["node", status["id"]],
        ["version", status["version"]],
        ["uptime", f"{status['uptime']:.0f}s"],
        ["members", ", ".join(f"{counts[s]} {s}" for s in ("alive", "suspect", "dead", "left"))],
        ["incarnation", membership["incarnation"]],
        ["joined", "yes" if membership["joined"] else "no (still asking the --join peers)"],
        ["health score", f"{membership['health_score']} (0 is healthy; probe every "
                         f"{membership['probe_interval']:g}s)"],
        ["ring", f"{status['ring']['members']} members, fingerprint "
                 f"{status['ring']['fingerprint']}"],
        ["dht", f"{dht.get('known_nodes', 0)} nodes known, {dht.get('own_records', 0)} "
                f"own records"],
        ["gossip packets", packets(membership["packets"])],
    ]
    counters = membership["counters"]
    rows.append(["probes", f"{counters['probes']} sent, {counters['probe_failures']} failed, "
                           f"{counters['suspicions']} suspicions, "
                           f"{counters['refutations']} refutations"])
    rows += replication_rows(status)
    return table(["", ""], rows).split("\n", 1)[1]


def packets(counts):
    """Accepted and dropped packets, dropped ones by reason."""
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(counts["dropped"].items()))
    return f"{counts['opened']} accepted, {dropped or 'none'} dropped"


def replication_rows(status):
    """The replication view: how the tables every node holds (keys, buckets,
    grants) travel, the peer channel they travel on, and the jobs that keep
    the local chunks sound (scrub) and collected (GC). Parts a node does not
    report (an older version) are left out."""
    rows = []
    jobs = status.get("jobs", {})
    tables = jobs.get("system_tables")
    if tables is not None:
        rows.append(["system tables", (
            f"write quorum {tables['quorum']}; {tables['published']} published, "
            f"{tables['applied']} applied, {tables['refused']} refused; "
            f"{tables['syncs']} syncs, {tables['sync_failures']} failed; "
            f"{tables['quorum_failures']} quorum failures")])
    channel = status.get("channel")
    if channel is not None:
        rows.append(["peer channel", (
            f"{channel['calls']} calls, {channel['failures']} failed, "
            f"{channel['connections']} connections accepted")])
        rows.append(["channel packets", packets(channel["packets"])])
    scrub = jobs.get("scrub")
    if scrub is not None:
        state = ("paused" if scrub["paused"] else
                 "off" if not scrub["running"] else
                 "between passes" if scrub["cursor"] is None else
                 f"at {scrub['cursor'] or '(start)'}")
        rows.append(["scrub", (
            f"{state}; {scrub['passes']} passes, {scrub['chunks_verified']} chunks "
            f"({size(scrub['bytes_verified'])}) verified; {scrub['bad_found']} bad, "
            f"{scrub['healed']} healed, {scrub['unrecoverable']} unrecoverable")])
    hints = jobs.get("hints")
    if hints is not None:
        queued = hints["queues"].values()
        rows.append(["hints", (
            f"{sum(q['count'] for q in queued)} held for {len(hints['queues'])} nodes "
            f"({size(sum(q['bytes'] for q in queued))}); {hints['delivered']} delivered, "
            f"{hints['already_there']} already there, {hints['expired']} expired, "
            f"{hints['skipped']} skipped")])
    rebalance = jobs.get("rebalance")
    if rebalance is not None:
        state = rebalance["state"]
        if state == "moving":
            state = f"moving {progress_bar(rebalance['progress'])}"
        elif state == "waiting":
            state = "waiting for the ring to settle"
        rows.append(["rebalance", (
            f"{state}; {rebalance['moved_chunks']} chunks ({size(rebalance['moved_bytes'])}) "
            f"moved, {rebalance['dropped_copies']} copies dropped, "
            f"{rebalance['unplaced']} unplaced")])
    antientropy = jobs.get("antientropy")
    if antientropy is not None:
        last, chunks = antientropy["last_pass"], antientropy["chunks"]
        progress = antientropy.get("progress")
        rows.append(["anti-entropy", (
            (f"pass running, {progress['done']}/{progress['total']} syncs; " if progress
             else "")
            + (f"last pass {last['seconds']:.1f} s, {last['repaired']} repaired; "
               if last else "no pass yet; ")
            + f"{antientropy['passes']} passes, {antientropy['pulled']} pulled, "
              f"{antientropy['pushed']} pushed, {antientropy['sync_failures']} syncs failed"
            + f"; chunks {chunks['chunks_pulled']} pulled, {chunks['chunks_pushed']} pushed "
              f"({size(chunks['bytes_pulled'] + chunks['bytes_pushed'])}), "
              f"{chunks['sync_failures']} syncs failed")])
    gc = jobs.get("gc")
    if gc is not None:
        rows.append(["gc", f"{gc['runs']} runs, {gc['failures']} failed"
                     + (f" (last: {gc['last_failure']['error']})" if gc["last_failure"]
                        else "")])
    return rows


def render_hints(hints):
    """The hint queues this node holds, one row per target node."""
    rows = [[target, q["count"], size(q["bytes"]), f"{q['oldest_age']:.0f}s"]
            for target, q in hints["queues"].items()]
    text = table(["FOR NODE", "HINTS", "BYTES", "OLDEST"], rows) if rows \
        else "no hints held: every write reached its owners"
    return text + (f"\n{hints['delivered']} delivered ({size(hints['delivered_bytes'])} of "
                   f"chunks), {hints['already_there']} already there, "
                   f"{hints['undeliverable']} undeliverable, {hints['expired']} expired "
                   f"after {hints['window'] / 3600:g} h, {hints['skipped']} skipped")


def cluster_hints(args):
    status = fetch(args.data, "/_z4/status")
    hints = status.get("jobs", {}).get("hints")
    if hints is None:
        raise ClusterCliError("this node does not report hints (it runs an older z4node)")
    return hints, render_hints(hints)


def progress_bar(fraction, width=20):
    """``[######--------------]  30%``: a bar for one line of a table."""
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def cluster_status(args):
    status = fetch(args.data, "/_z4/status")
    return status, render_status(status)


def cluster_members(args):
    peers = fetch(args.data, "/_z4/peers")
    return peers, render_members(peers)
