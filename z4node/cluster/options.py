"""The cluster's command-line options and the cluster secret.

Owns: :data:`CLUSTER_OPTIONS` (concatenated into ``z4node.tap.Options``),
parsing ``--join``, and finding or creating the cluster secret
(:func:`load_secret`). Never logs a secret: when it generates one it logs
where it is and how to hand it to the next node.
"""

import os

from twisted.logger import Logger
from twisted.python import usage

from z4node import durable
from z4node.cluster.sealing import ClusterKeyError, derive_key, generate_secret

DEFAULT_GOSSIP_PORT = 9671
DEFAULT_DHT_PORT = 9672

# twisted.python.usage optParameters rows: long, short, default, help, coerce.
CLUSTER_OPTIONS = [
    ["gossip-port", None, DEFAULT_GOSSIP_PORT, "UDP port of SWIM gossip.", int],
    ["dht-port", None, DEFAULT_DHT_PORT, "UDP port of the Kademlia DHT.", int],
    ["join", "j", None,
     "HOST[:PORT][,HOST[:PORT]...]: gossip address of any existing member "
     f"(port default {DEFAULT_GOSSIP_PORT})."],
    ["vnodes", None, 150, "Virtual nodes per unit of capacity on the hash ring.", int],
    ["zone", None, None, "Failure domain of this node (rack, room, site); replicas "
                         "go to distinct zones."],
    ["capacity", None, 1.0, "Relative share of data this node takes (1.0 typical).", float],
    ["dead-grace", None, 1.0,
     "Hours a dead member keeps its place in the ring; then it is forgotten and "
     "its data copied again from the surviving copies.", float],
    ["advertise", None, None, "Address other nodes use to reach this one "
                              "(default: --host; required when --host is a wildcard)."],
    ["cluster-key-file", None, None, "File holding the cluster secret "
                                     "(default: $Z4_CLUSTER_KEY, else DATA/cluster.key)."],
]

SECRET_ENV = "Z4_CLUSTER_KEY"
GENERATED_KEY_FILE = "cluster.key"

log = Logger()


def parse_join(value, default_port=DEFAULT_GOSSIP_PORT):
    """``"a:1,b"`` -> ``[("a", 1), ("b", default_port)]``."""
    addresses = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, str(default_port)
        host = host.strip("[]")
        try:
            port = int(port)
        except ValueError:
            raise usage.UsageError(f"--join: bad port in {item!r}")
        if not host or not 0 < port < 65536:
            raise usage.UsageError(f"--join: {item!r} is not HOST[:PORT]")
        addresses.append((host, port))
    return addresses


def check_cluster_options(options, s3_host):
    """Validate the cluster options; return ``(advertise, join addresses)``."""
    for name in ("gossip-port", "dht-port"):
        if not 0 < options[name] < 65536:
            raise usage.UsageError(f"--{name} must be 1..65535")
    if options["gossip-port"] == options["dht-port"]:
        raise usage.UsageError("--gossip-port and --dht-port must differ")
    if options["vnodes"] < 1:
        raise usage.UsageError("--vnodes must be at least 1")
    if not options["capacity"] > 0:
        raise usage.UsageError("--capacity must be positive")
    if not options["dead-grace"] > 0:
        raise usage.UsageError("--dead-grace must be a positive number of hours")
    advertise = options["advertise"] or s3_host
    if advertise in ("", "0.0.0.0", "::"):
        raise usage.UsageError(
            "--advertise HOST is required when --host is a wildcard: peers must "
            "know which address reaches this node")
    return advertise, parse_join(options["join"])


def load_secret(environ, key_file, data_dir, joining):
    """The cluster secret: ``$Z4_CLUSTER_KEY``, else ``key_file``, else
    ``DATA/cluster.key``; else, for the first node of a cluster (not
    joining), a new secret saved to ``DATA/cluster.key``.

    Raises :class:`usage.UsageError` when a joining node has none (it could
    never be admitted) or the secret is unusable.
    """
    secret = environ.get(SECRET_ENV)
    source = f"${SECRET_ENV}"
    if not secret and key_file:
        try:
            with open(key_file) as f:
                secret = f.read()
        except OSError as e:
            raise usage.UsageError(f"--cluster-key-file: {e}")
        source = key_file
    saved = os.path.join(data_dir, GENERATED_KEY_FILE)
    if not secret and os.path.exists(saved):
        with open(saved) as f:
            secret = f.read()
        source = saved
    if not secret:
        if joining:
            raise usage.UsageError(
                f"--join needs the cluster secret: set ${SECRET_ENV} or "
                f"--cluster-key-file to the secret of the cluster being joined "
                f"(its first node saved it in its DATA/{GENERATED_KEY_FILE})")
        secret = generate_secret()
        # Durable before any node is told to join with it: a secret lost
        # in a crash would lock this node out of its own cluster.
        durable.write_file(saved, (secret + "\n").encode("ascii"), replace=False)
        log.info(
            "generated a new cluster secret in {path}. Start the other nodes "
            "with a copy of that file (--cluster-key-file=PATH) or with "
            "{env}=\"$(cat {path})\" and --join pointing here.",
            path=saved, env=SECRET_ENV)
        source = saved
    try:
        derive_key(secret, b"gossip")
    except ClusterKeyError as e:
        raise usage.UsageError(f"cluster secret from {source}: {e}")
    return secret.strip()
