"""``z4 cluster status`` and ``z4 cluster members``: the peer status
endpoints as tables (or the documents, with ``z4 --json``).

Owns: finding the local node through its data directory (``node.json``,
written by the node on start) and rendering ``/_z4/status`` and
``/_z4/peers``. Reads only; a blocking urllib call is fine in a CLI.

Follows the ``z4`` command's conventions (``z4node.admin.cli``): the
top-level parser has ``--data`` and ``--json``; each command is
``run(args) -> (result, text)`` and raises :class:`ClusterCliError` for
anything the operator must fix.
"""

import json
import os
import ssl
import urllib.error
import urllib.request

# Seconds to wait for the node's answer: it is local and answers from memory.
HTTP_TIMEOUT = 10


class ClusterCliError(Exception):
    """Something the operator must fix; printed without a traceback."""


def add_cluster_commands(subparsers):
    """Add ``cluster status`` and ``cluster members`` to the ``z4`` parser's
    subparsers; each sets ``run``."""
    cluster = subparsers.add_parser("cluster", help="cluster membership and health")
    commands = cluster.add_subparsers(dest="action", required=True)
    commands.add_parser("status", help="this node's cluster health and counters") \
        .set_defaults(run=cluster_status)
    commands.add_parser("members", help="every member this node knows, with its state") \
        .set_defaults(run=cluster_members)
    return cluster


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


def fetch(data_dir, path):
    url = node_url(data_dir) + path
    # The node was found through its own data dir and these endpoints are
    # public status: its certificate (often for a name, not 127.0.0.1)
    # is not checked.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT, context=context) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ClusterCliError(f"{url}: {e}")


def table(headers, rows):
    """Left-aligned columns separated by two spaces."""
    cells = [list(map(str, headers))] + [[("-" if c is None else str(c)) for c in r]
                                         for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


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
    dropped = membership["packets"]["dropped"]
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
        ["gossip packets", f"{membership['packets']['opened']} accepted, "
                           + (", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
                              or "none") + " dropped"],
    ]
    counters = membership["counters"]
    rows.append(["probes", f"{counters['probes']} sent, {counters['probe_failures']} failed, "
                           f"{counters['suspicions']} suspicions, "
                           f"{counters['refutations']} refutations"])
    return table(["", ""], rows).split("\n", 1)[1]


def cluster_status(args):
    status = fetch(args.data, "/_z4/status")
    return status, render_status(status)


def cluster_members(args):
    peers = fetch(args.data, "/_z4/peers")
    return peers, render_members(peers)
