"""``twistd z4node``: command-line options and the node's service tree.

The node runs on Twisted's asyncio reactor because the Kademlia DHT package
is asyncio based; :func:`makeService` installs that reactor itself when
twistd has not installed one yet, and refuses to start on any other.
"""

import gc
import os
import signal
import sys

from twisted.python import usage

from z4node.cluster.options import CLUSTER_OPTIONS, check_cluster_options
from z4node.s3.acl import OWNERSHIPS

DEFAULT_S3_PORT = 9670
# Open HTTP connections beyond this are answered 503 SlowDown and closed.
# Under the common 1,024-descriptor soft limit, leaving about a hundred for
# the node's own files and sockets; raise both together for more.
DEFAULT_MAX_CONNECTIONS = 900
# Request-body bytes held in memory by all uploads together: 21 large
# uploads at their full 24 MiB pipeline (s3.http.UploadBudget), or many
# more smaller ones; bodies up to 64 KiB take no share. docs/performance.md
# measures the RSS this bounds.
DEFAULT_UPLOAD_MEMORY_MIB = 512
# A stop (SIGTERM) lets requests in progress run this long: a 1 GiB upload
# at 36 MB/s, or any smaller one. etc/z4node.service's TimeoutStopSec
# leaves room above it for leaving the cluster and closing the stores.
DEFAULT_STOP_TIMEOUT_SECONDS = 30.0


class ReactorError(Exception):
    """The node cannot run on the reactor twistd installed."""


def install_asyncio_reactor():
    """Install the asyncio reactor unless one is installed; return it.

    Raises :class:`ReactorError` when another reactor is already running the
    process: the DHT would silently never listen on it.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise ReactorError(
            "z4node needs Twisted's asyncio reactor (the DHT is asyncio based): "
            "run `twistd --reactor=asyncio z4node ...` or leave --reactor out"
        )
    return reactor


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run one z4node: the S3 API over HTTP(S) plus cluster membership. "
                "Set Z4_ENCRYPTION_KEY (32 bytes, hex or base64) in the environment "
                "to encrypt a new data dir at rest.")

    optParameters = [
        ["port", "p", DEFAULT_S3_PORT, "TCP port of the S3 API.", int],
        ["host", None, "127.0.0.1", "Address the S3 API listens on."],
        ["data", "d", "./data", "Data directory (chunks, metadata, admin socket)."],
        ["id", None, None, "Node id (default: generated once, kept in the data dir)."],
        ["domain", None, None,
         "Domain(s) for virtual-host-style requests, comma separated: with "
         "s3.example.test, bucket.s3.example.test/key names bucket and key "
         "(default: $Z4_DOMAIN; path style always works)."],
        ["tls-cert", None, None, "PEM certificate (chain) to serve HTTPS with."],
        ["tls-key", None, None, "PEM private key of --tls-cert."],
        ["trusted-proxy", None, None,
         "ADDR[,ADDR...]: reverse proxies whose X-Forwarded-Proto: https "
         "marks a request as having come over TLS."],
        ["max-connections", None, DEFAULT_MAX_CONNECTIONS,
         "Open HTTP connections at most; more are answered 503 SlowDown.", int],
        ["upload-memory", None, DEFAULT_UPLOAD_MEMORY_MIB,
         "MiB of request bodies held in memory at most, all uploads together; "
         "past it uploads wait, then get 503 SlowDown.", int],
        ["scrub-rate", None, 8.0,
         "MB/s the scrubber reads chunk files at to check them (0: no scrubbing).",
         float],
        ["gc-grace", None, 10.0,
         "Minutes a chunk no object uses waits before its files are deleted (on "
         "every node that holds one); an upload that reuses the content meanwhile "
         "keeps it.", float],
        ["hint-window", None, 3.0,
         "Hours a node keeps a hint (a copy held for an owner that was down) "
         "undelivered before dropping it; anti-entropy restores the rest.", float],
        ["hint-rate", None, 32.0,
         "MB/s at most a node sends hinted chunks to their owners at.", float],
        ["repair-interval", None, 10.0,
         "Minutes between anti-entropy passes, in which each node compares the "
         "Merkle trees of the object versions it holds with the other owners'.", float],
        ["rebalance-delay", None, 30.0,
         "Seconds the ring must stay unchanged (a node joined, left or was "
         "forgotten) before chunks move to their new owners.", float],
        ["rebalance-rate", None, 32.0,
         "MB/s at most a node sends chunks to their new owners at.", float],
        ["object-ownership", None, "ObjectWriter",
         "ObjectOwnership of a bucket created without x-amz-object-ownership: "
         "ObjectWriter (ACLs on, the writer owns an object), BucketOwnerPreferred "
         "or BucketOwnerEnforced (ACLs off, as on AWS since 2023)."],
        ["stop-timeout", None, DEFAULT_STOP_TIMEOUT_SECONDS,
         "Seconds a stop (SIGTERM) lets requests in progress finish before cutting "
         "them; new connections are refused meanwhile.", float],
        ["lifecycle-interval", None, None,
         "Seconds between lifecycle passes (default 3600, or $Z4_LIFECYCLE_INTERVAL).",
         float],
        ["metrics-token", None, None,
         "Bearer token that Prometheus scrapes /metrics with (default: "
         "$Z4_METRICS_TOKEN; the environment keeps it out of `ps`)."],
        ["kms-master-key-file", None, None,
         "PATH: file holding the KMS master key (32 bytes, hex or base64), the same on "
         "every node, which SSE-KMS keys are wrapped by (default: $Z4_KMS_MASTER_KEY; "
         "without either, SSE-KMS is off)."],
        ["log-format", None, "text", "The node log's format: text, or json (one "
         "twisted.logger JSON event per line)."],
        ["access-log", None, None,
         "PATH: append one JSON line per S3 request (id, key id, operation, status, "
         "bytes, duration); SIGHUP reopens it."],
        ["lifecycle-test-day-seconds", None, None,
         "TESTS ONLY, never in production: a lifecycle 'day' lasts this many seconds "
         "and the lifecycle worker runs that often (or $Z4_LIFECYCLE_TEST_DAY_SECONDS).",
         float],
    ] + CLUSTER_OPTIONS
    optFlags = [
        ["debug", None, "Log every request and background job step."],
        ["metrics-public", None,
         "Serve /metrics to anyone, without a token (behind a firewall only)."],
        ["lifecycle-dry-run", None,
         "Log what lifecycle rules would delete, delete nothing (or $Z4_LIFECYCLE_DRY_RUN=1)."],
        ["block-public-access-default", None,
         "New buckets start with all four Block Public Access flags on (as on AWS "
         "since 2023); each bucket can change its own. Default: off."],
    ]

    def postOptions(self):
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError("--port must be 0..65535")
        self["data"] = os.path.abspath(self["data"])
        for name in ("max-connections", "upload-memory"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["gc-grace"] < 0:
            raise usage.UsageError("--gc-grace must be 0 or more minutes")
        if self["scrub-rate"] < 0:
            raise usage.UsageError("--scrub-rate must be 0 (off) or more")
        if not self["rebalance-delay"] >= 0:
            raise usage.UsageError("--rebalance-delay must be 0 or more seconds")
        for name in ("hint-window", "hint-rate", "rebalance-rate", "repair-interval"):
            if not self[name] > 0:
                raise usage.UsageError(f"--{name} must be a positive number")
        if not self["stop-timeout"] >= 0:
            raise usage.UsageError("--stop-timeout must be 0 or more seconds")
        for name in ("lifecycle-interval", "lifecycle-test-day-seconds"):
            if self[name] is not None and not self[name] > 0:
                raise usage.UsageError(f"--{name} must be a positive number of seconds")
        if self["object-ownership"] not in OWNERSHIPS:
            raise usage.UsageError("--object-ownership must be one of " + ", ".join(OWNERSHIPS))
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        if self["access-log"]:
            self["access-log"] = os.path.abspath(self["access-log"])
            if not os.path.isdir(os.path.dirname(self["access-log"])):
                raise usage.UsageError(f"--access-log: no directory "
                                       f"{os.path.dirname(self['access-log'])}")
        if self["kms-master-key-file"]:
            from z4node.objects.kms import master_key_from
            from z4node.storage.crypto import EncryptionKeyError

            self["kms-master-key-file"] = os.path.abspath(self["kms-master-key-file"])
            try:
                master_key_from(self, {})
            except (OSError, EncryptionKeyError) as e:
                raise usage.UsageError(f"--kms-master-key-file: {e}")
        # Bad cluster options are usage errors now, not a failed start later.
        check_cluster_options(self, self["host"])
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if self["tls-cert"]:
            from z4node.tls import TLSConfigError, server_context

            self["tls-cert"] = os.path.abspath(self["tls-cert"])
            self["tls-key"] = os.path.abspath(self["tls-key"])
            try:
                server_context(self["tls-cert"], self["tls-key"])
            except TLSConfigError as e:
                raise usage.UsageError(str(e))
        self["trusted-proxy"] = [a.strip() for a in (self["trusted-proxy"] or "").split(",")
                                 if a.strip()]


def makeService(options):
    try:
        reactor = install_asyncio_reactor()
    except ReactorError as e:
        raise SystemExit(str(e))
    from z4node.node import DataDirInUse, Node
    from z4node.storage.atrest import KEY_ENV
    from z4node.storage.crypto import EncryptionKeyError, parse_node_key

    from z4node.objects.kms import MASTER_KEY_ENV, PREVIOUS_MASTER_KEY_ENV

    for name in (KEY_ENV, MASTER_KEY_ENV, PREVIOUS_MASTER_KEY_ENV):
        if os.environ.get(name):
            try:
                parse_node_key(os.environ[name], name=name)
            except EncryptionKeyError as e:
                raise SystemExit(f"z4node: {e}")

    try:
        node = Node.from_options(reactor, options, os.environ)
    except DataDirInUse as e:
        raise SystemExit(f"z4node: {e}")
    node.ready.addCallback(_freeze_startup_heap)
    if options["log-format"] == "json":
        # twistd's own options (--logfile, --nodaemon) are the parent's.
        node.log_observer = json_log_observer(getattr(options, "parent", None) or {})
    # SIGHUP (systemctl reload) reads the TLS certificate files again and
    # reopens the access log.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(node.reload))
    # After the reactor's own handlers, which this replaces.
    reactor.callWhenRunning(_stop_gracefully_on_signals, reactor)
    return node


def _stop_gracefully_on_signals(reactor):
    """SIGTERM and SIGINT stop the node (the service tree's stopService:
    requests in progress finish, the cluster is left), and the process
    then exits 0. twistd's own handlers would re-raise the signal once
    stopped, so that a service manager could not tell a completed stop
    from a process killed before it could stop."""
    from twisted.internet.error import ReactorNotRunning
    from twisted.logger import Logger

    log = Logger()

    def stop():
        try:
            reactor.stop()
        except ReactorNotRunning:
            log.info("already stopping")

    def handler(number, frame):
        log.info("received {name}: stopping", name=signal.Signals(number).name)
        reactor.callFromThread(stop)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def json_log_observer(twistd_options):
    """A twisted.logger JSON observer (one event per line) writing where
    twistd would write its text log: --logfile, rotated like twistd's, or
    standard output with --nodaemon and no --logfile (or --logfile=-)."""
    from twisted.logger import jsonFileLogObserver
    from twisted.python.logfile import LogFile

    name = twistd_options.get("logfile")
    if name == "-" or (twistd_options.get("nodaemon") and not name):
        out = sys.stdout
    else:
        out = LogFile.fromFullPath(name or "twistd.log")
    # No record separator: a line is an event, for jq and log shippers.
    return jsonFileLogObserver(out, recordSeparator="")


def _freeze_startup_heap(result):
    """Move everything alive once the node serves (modules, classes, the
    system tables: some 80,000 objects) out of the cyclic collector's
    reach. Requests promote short-lived objects into the oldest
    generation all the time, and each full collection then walked the
    whole startup heap with the reactor stopped: 50-120 ms pauses, the
    4 KiB p99 at concurrency 32 (docs/performance.md)."""
    gc.freeze()
    return result
