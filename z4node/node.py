"""The node: one service tree that opens the data directory, loads the
system tables, makes sure an admin key exists, and serves the S3 API, the
``/_z4/`` endpoints, the local admin socket, garbage collection, the
lifecycle worker, the delivery of server access logs and the console
(``/_z4/console``, :mod:`z4node.web.console`).

Start-up is asynchronous (the system tables load on a thread); the S3 port
opens only when the node is ready, so a client that can connect can use it.
A failure to start stops the process with one clear line in the log.

Before anything is read, the data dir's encryption is settled
(``storage.atrest``): with the right node key the metadata and chunk stores
seal and open what they store, and a key rotation that a crash interrupted
carries on. With ``--tls-cert``/``--tls-key`` the S3 port speaks HTTPS;
:meth:`Node.reload_tls` (SIGHUP) reads the certificate files again.

Under systemd (``Type=notify``) the node says READY=1 once it serves
(:func:`notify_systemd`). A stop (SIGTERM) is graceful: the ports close,
requests in progress get up to ``--stop-timeout`` seconds to finish
(:meth:`NodeSite.drain`), then the node leaves the cluster and exits.
"""

import fcntl
import json
import os
import random
import socket
import sys

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (SSL4ServerEndpoint, TCP4ServerEndpoint,
                                        UNIXServerEndpoint)
from twisted.internet.task import deferLater
from twisted.logger import Logger

from z4node import __version__, durable
from z4node.admin.backup import META_FILE
from z4node.admin.commands import AdminCommands
from z4node.admin.server import AdminFactory, SocketPath
from z4node.hlc import HybridLogicalClock
from z4node.objects.access_logging import SERVICE_PRINCIPAL, ServerAccessLog
from z4node.objects.lifecycle import DAY_SECONDS, LifecycleWorker
from z4node.objects.service import ObjectService
from z4node.objects.kms import KeyManager, master_key_from, previous_master_key_from
from z4node.objects.system import SystemTables
from z4node.replication.antientropy import AntiEntropy
from z4node.replication.chunk_sync import ChunkSync
from z4node.replication.chunk_tree import ChunkTrees
from z4node.replication.everywhere import EverywhereTables
from z4node.replication.hints import HintedHandoff
from z4node.replication.rebalance import LAYOUT_FILE, Rebalancer
from z4node.replication.references import ChunkReferences
from z4node.s3.api import S3Api, S3Resource
from z4node.s3.authorization import BLOCK_SETTING, service_allowed
from z4node.s3.handlers import HANDLERS, public_access
from z4node.s3.http import MiB, S3Channel, S3Site, UploadBudget
from z4node.storage.atrest import (EncryptionKeyError, EncryptionRefused, open_encryption,
                                   use_at_rest)
from z4node.storage.chunks import ChunkStore
from z4node.storage.gc import GarbageCollector
from z4node.storage.hint_store import HintStore
from z4node.storage.meta import MetaStore
from z4node.storage.rotation import KeyRotation
from z4node.storage.scrub import MB, Scrubber
from z4node.tls import ReloadableServerTLS, TLSConfigError
from z4node.cluster.service import ClusterService
from z4node.tap import (DEFAULT_MAX_CONNECTIONS, DEFAULT_STOP_TIMEOUT_SECONDS,
                        DEFAULT_UPLOAD_MEMORY_MIB)
from z4node.web.accesslog import AccessLog
from z4node.web.console import Console
from z4node.web.health import NodeHealth, make_health_resource
from z4node.web.metrics import TOKEN_ENV, MetricsAccess, MetricsResource, NodeMetrics
from z4node.web.status import make_z4_resource, new_z4_root

ADMIN_KEY_NAME = "admin"
CREDENTIALS_FILE = "credentials"
NODE_FILE = "node.json"
# Held (flock, exclusive) by the one process serving the data dir.
LOCK_FILE = "lock"


class DataDirInUse(Exception):
    """Another process holds the data dir's lock."""


def lock_data_dir(data_dir):
    """Take the data dir's exclusive lock; the open descriptor that holds
    it (closing it releases the lock, as the process's exit does).

    A data dir belongs to one process: the head cache, the in-memory
    system tables and the chunk pins would each be wrong beside a second
    writer. Raises :class:`DataDirInUse` naming the holder's pid.
    """
    path = os.path.join(data_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(f"data dir {data_dir} is in use by another z4node process "
                           f"(pid {holder}); a data dir can be served by one process "
                           f"only") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def notify_systemd(environ, state):
    """Send ``state`` (``b"READY=1"``, ``b"STOPPING=1"``) to the service
    manager's notification socket, when there is one (``$NOTIFY_SOCKET``,
    set by systemd for ``Type=notify``); True if sent.

    sd_notify(3)'s protocol is one datagram on a UNIX socket (a name
    starting with ``@`` is in the abstract namespace): a few lines here
    instead of a dependency. Never blocks: a full socket is an error.
    """
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)
        s.sendto(state, address)
    return True


class _TrackedChannel(S3Channel):
    """An S3 connection that its site knows of while it is open."""

    def connectionMade(self):
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason):
        self.site.channels.discard(self)
        super().connectionLost(reason)


class NodeSite(S3Site):
    """The node's S3 site, which keeps its open connections so that a stop
    can let the requests on them finish (:meth:`drain`)."""

    protocol = _TrackedChannel
    # How often a drain looks for connections whose request has finished.
    drain_poll_seconds = 0.05

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = set()

    async def drain(self, clock, timeout_seconds):
        """Close every connection once no request is in progress on it (an
        idle keep-alive connection at once), cutting what is still running
        after ``timeout_seconds``; the number of connections cut. Call it
        after the port stopped listening."""
        deadline = clock.seconds() + timeout_seconds
        while True:
            for channel in list(self.channels):
                # twisted.web keeps a connection's requests in progress
                # (from their first line to their finish) in .requests.
                if not channel.requests:
                    channel.transport.loseConnection()
            busy = [c for c in self.channels if c.requests]
            if not busy:
                return 0
            if clock.seconds() >= deadline:
                for channel in busy:
                    channel.transport.abortConnection()
                return len(busy)
            await deferLater(clock, self.drain_poll_seconds)


class Node(MultiService):
    log = Logger()

    # Idle HTTP connections are closed after this long; a paused upload
    # (the node is behind on disk) still counts as idle after it.
    http_idle_timeout_seconds = 300
    # A request's line and headers must arrive within this long of its
    # first byte (Apache's mod_reqtimeout allows 20-40 s), however slowly
    # they trickle: a client sending a header byte a minute is cut off.
    http_header_timeout_seconds = 30
    # A request body must average at least this many bytes/s over every
    # 20 s window in which the node did not pause it (mod_reqtimeout's
    # MinRate is 500): a mobile link does 10,000x that, slowloris less.
    http_body_min_rate = 500
    # Seconds a request waits for its share of --upload-memory before
    # 503 SlowDown.
    upload_memory_wait_seconds = 10

    def __init__(self, reactor, data_dir, host, port, node_id, environ, debug=False,
                 options=None):
        super().__init__()
        self.options = options
        self.reactor = reactor
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.requested_id = node_id
        self.environ = environ
        self.debug = debug
        self.node_id = None
        self.started_at = None
        self.s3_port = None
        self.cluster = None
        self.metrics = None
        self.access_log = None
        self.server_access_log = None
        # A twisted.logger observer for twistd to log to instead of its
        # text log (--log-format json); see setServiceParent.
        self.log_observer = None
        self._listeners = []
        self._site = None
        self._admin_socket_path = None
        self._tls_context = None
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        # Before anything in the data dir is opened.
        self._lock_fd = lock_data_dir(data_dir)
        self.meta_path = os.path.join(data_dir, META_FILE)
        self.meta = MetaStore(reactor, self.meta_path)
        self.chunks = ChunkStore(reactor, os.path.join(data_dir, "chunks"))
        self.hlc = HybridLogicalClock(reactor)
        self.system = SystemTables(self.meta, self.hlc, reactor)
        self.objects = ObjectService(reactor, self.meta, self.chunks, self.system, self.hlc)
        # Read here, so that a malformed key stops the node before it starts.
        self.kms = KeyManager(master_key_from(options, environ), self.system,
                              previous_master_key=previous_master_key_from(environ))
        self.objects.kms = self.kms
        self.gc = GarbageCollector(reactor, self.meta, self.chunks)
        self.gc.setServiceParent(self)
        self.at_rest = None
        self.rotation = None
        options = options or {}
        grace = options.get("gc-grace")
        if grace is not None:
            self.gc.chunk_grace_seconds = grace * 60
        scrub_rate = options.get("scrub-rate", Scrubber.default_rate / MB)
        self.scrubber = Scrubber(reactor, self.meta, self.chunks, rate=scrub_rate * MB)
        if scrub_rate:
            self.scrubber.setServiceParent(self)
        self.tls = (options.get("tls-cert"), options.get("tls-key"))
        self.trusted_proxies = frozenset(options.get("trusted-proxy") or ())
        if options.get("object-ownership"):
            self.objects.default_ownership = options["object-ownership"]
        self.metrics_access = MetricsAccess(
            options.get("metrics-token") or environ.get(TOKEN_ENV),
            bool(options.get("metrics-public")))
        interval, day, dry_run = lifecycle_settings(options, environ)
        if day is not None:
            self.objects.lifecycle_day_seconds = day
        self.lifecycle = LifecycleWorker(
            reactor, self.objects, self.meta, interval_seconds=interval,
            dry_run=dry_run, **({"day_seconds": day} if day is not None else {}))
        self.lifecycle.setServiceParent(self)
        if options.get("block-public-access-default"):
            self.objects.default_bucket_settings = {
                BLOCK_SETTING: public_access.all_blocked()}
        self.ready = Deferred()

    @property
    def scheme(self):
        return "https" if self.tls[0] else "http"

    @classmethod
    def from_options(cls, reactor, options, environ):
        return cls(reactor, options["data"], options["host"], options["port"],
                   options["id"], environ, debug=bool(options["debug"]), options=options)

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        if self.log_observer is not None:
            # twistd starts logging after building the service, to the
            # observer its application names (as a .tac file would set it).
            from twisted.logger import ILogObserver
            parent.setComponent(ILogObserver, self.log_observer)

    def startService(self):
        if self.lifecycle.day_seconds != DAY_SECONDS:
            self.log.warn("lifecycle days last {s} s: a test-only setting, never for "
                          "production data", s=self.lifecycle.day_seconds)
        self.meta.start()
        self.chunks.start()
        Deferred.fromCoroutine(self._start()).addCallbacks(
            self.ready.callback, self._failed_to_start)

    def _failed_to_start(self, failure):
        if failure.check(EncryptionRefused, EncryptionKeyError, TLSConfigError):
            self.log.error("z4node could not start: {reason}", reason=str(failure.value))
        else:
            self.log.failure("z4node could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self):
        first_start = await self.meta.get_setting("node_id") is None
        await self._open_encryption(first_start)
        self.node_id = await self.meta.set_setting_if_absent(
            "node_id", self.requested_id or os.urandom(8).hex())
        if self.requested_id and self.requested_id != self.node_id:
            raise RuntimeError(
                f"data dir {self.data_dir} belongs to node {self.node_id!r}, "
                f"not {self.requested_id!r}")
        await self.system.load()
        await self._ensure_admin_key()
        self.started_at = self.reactor.seconds()
        super().startService()
        await self._listen()
        self._write_node_file()
        if self.rotation is not None and self.rotation.state is not None:
            self.log.info("encryption: resuming the key rotation to {id}",
                          id=self.rotation.state["to"])
            self.rotation.resume()
        self.log.info("z4node {id} serving S3 on {scheme}://{host}:{port}",
                      id=self.node_id, scheme=self.scheme, host=self.host,
                      port=self.s3_port)
        self._notify_systemd(b"READY=1")

    async def _open_encryption(self, first_start):
        self.at_rest = await open_encryption(self.meta, self.environ, self.data_dir,
                                             first_start)
        if not self.at_rest.encrypted:
            self.log.info("encryption at rest: off (data dir created without a node key)")
            return
        use_at_rest(self.at_rest, self.meta, self.chunks)
        self.rotation = KeyRotation(self.reactor, self.meta, self.at_rest)
        await self.rotation.load()
        self.log.info("encryption at rest: on (node key {id})",
                      id=self.at_rest.keyring.current_id.hex())

    async def _listen(self):
        options = self.options or {}
        domains = options.get("domain") or self.environ.get("Z4_DOMAIN") or ""
        if options.get("access-log"):
            self.access_log = AccessLog(options["access-log"], self.reactor)
            self.access_log.start()
        if self.metrics_access.enabled:
            self.metrics = NodeMetrics(self.reactor, self.node_id)
            self.metrics.lag.start()
        self.server_access_log = ServerAccessLog(
            self.reactor, self.objects, self._logging_may_deliver, random.Random(),
            interval=access_logging_interval(self.environ))
        self.server_access_log.start()
        api = S3Api(self.reactor, self.objects, HANDLERS, self.chunks.run, self.node_id,
                    debug=self.debug,
                    domains=[d for d in domains.split(",") if d.strip()],
                    trusted_proxies=self.trusted_proxies, answered=self._request_hook())
        z4 = new_z4_root()
        # Before the port opens: a supervisor may ask as soon as it can.
        z4.putChild(b"health", make_health_resource(NodeHealth(
            self.ready, lambda: self.cluster, bool(options.get("join")))))
        budget = UploadBudget(self.reactor,
                              options.get("upload-memory", DEFAULT_UPLOAD_MEMORY_MIB) * MiB,
                              self.upload_memory_wait_seconds)
        site = self._site = NodeSite(
            S3Resource(api, z4, MetricsResource(self.metrics, self.metrics_access)),
            timeout=self.http_idle_timeout_seconds, reactor=self.reactor,
            max_connections=options.get("max-connections", DEFAULT_MAX_CONNECTIONS),
            header_timeout_seconds=self.http_header_timeout_seconds,
            body_min_rate=self.http_body_min_rate, upload_budget=budget)
        if self.tls[0]:
            self._tls_context = ReloadableServerTLS(*self.tls)
            endpoint = SSL4ServerEndpoint(self.reactor, self.port, self._tls_context,
                                          interface=self.host, backlog=1024)
        else:
            endpoint = TCP4ServerEndpoint(self.reactor, self.port, interface=self.host,
                                          backlog=1024)
        port = await endpoint.listen(site)
        self._listeners.append(port)
        self.s3_port = port.getHost().port
        # The cluster starts once the S3 port is open: peers push/pull
        # through it as soon as they hear of us.
        self.cluster = ClusterService.from_options(
            self.reactor, self.options, self.environ, self.node_id, self.host,
            self.s3_port, self.data_dir)
        node_info = {"id": self.node_id, "started": self.started_at, "jobs": self.jobs_status}
        make_z4_resource(self.reactor, node_info, self.cluster, self.system, root=z4)
        z4.putChild(b"console", Console(self.reactor, api, AdminCommands(self), node_info,
                                        self.cluster))
        self.cluster.setServiceParent(self)
        # Before anything can answer a request (all of this runs without
        # yielding to the reactor): objects live on their ring owners.
        hours, rate = options.get("hint-window"), options.get("hint-rate")
        hints = HintStore(self.meta)
        self.handoff = HintedHandoff(
            self.reactor, self.cluster, hints, self.chunks,
            window=None if hours is None else hours * 3600,
            rate=None if rate is None else rate * MB)
        self.objects.replicate_with(self.cluster, self.handoff)
        self.scrubber.heal = self.objects.chunk_manager.heal
        self.handoff.setServiceParent(self)
        rate = options.get("rebalance-rate")
        self.rebalance = Rebalancer(
            self.reactor, self.cluster, self.chunks, hints,
            os.path.join(self.data_dir, LAYOUT_FILE), tables=self.objects.tables,
            settle=options.get("rebalance-delay"),
            rate=None if rate is None else rate * MB,
            strays=self.objects.chunk_manager.strays)
        self.rebalance.setServiceParent(self)
        # Chunk references are counted where the versions are, not on the
        # chunks' owners: GC asks the other members before deleting a chunk.
        self.references = ChunkReferences(self.cluster, self.meta, self.chunks, hints)
        self.gc.in_use = self.references.in_use
        minutes = options.get("repair-interval")
        tables = self.objects.tables
        chunk_trees = ChunkTrees(self.chunks, self.node_id, self.rebalance.placed_ring)
        self.antientropy = AntiEntropy(
            self.reactor, random.Random(), self.cluster,
            [tables.version_table, tables.upload_table, tables.part_table],
            tables.partitions_held, interval=None if minutes is None else minutes * 60,
            chunk_sync=ChunkSync(self.reactor, self.cluster, chunk_trees,
                                 self.objects.chunk_manager, self.references,
                                 rate=self.rebalance.rate))
        self.antientropy.setServiceParent(self)
        # Keys, buckets and grants are kept whole on every node.
        self.everywhere = EverywhereTables(self.reactor, self.cluster, random.Random())
        self.system.replicate_with(self.everywhere)
        self.everywhere.setServiceParent(self)
        if self.metrics is not None:
            self._watch(budget)
        # Open while the socket listens: the port removes the socket file
        # by this name when it stops, and a long data dir's name is
        # /proc/self/fd/N/..., meaningless (or another file) once N closes.
        self._admin_socket_path = SocketPath(self.data_dir)
        if os.path.exists(self._admin_socket_path.real):
            os.unlink(self._admin_socket_path.real)
        admin = await UNIXServerEndpoint(
            self.reactor, self._admin_socket_path.usable, mode=0o600).listen(AdminFactory(self))
        self._listeners.append(admin)

    def _notify_systemd(self, state):
        try:
            if notify_systemd(self.environ, state):
                self.log.info("told systemd {state}", state=state.decode())
        except OSError as e:
            self.log.warn("could not tell systemd {state} through $NOTIFY_SOCKET: "
                          "{error}", state=state.decode(), error=e)

    def _logging_may_deliver(self, target, prefix, source):
        return service_allowed(self.system, SERVICE_PRINCIPAL, "s3:PutObject", target,
                               prefix, source)

    def _request_hook(self):
        """What S3Api tells of each request answered: the metrics, the
        access log, the server access logs of buckets that turned them on."""
        hooks = [hook.answered for hook in (self.metrics, self.access_log,
                                            self.server_access_log)
                 if hook is not None]
        if len(hooks) < 2:
            return hooks[0] if hooks else None

        def answered(*args):
            for hook in hooks:
                hook(*args)
        return answered

    def _watch(self, budget):
        """Point the metrics at the counters the node's parts keep."""
        metrics = self.metrics
        metrics.watch_cluster(self.cluster)
        metrics.watch_bucket_usage(self.meta.bucket_usage)
        metrics.watch_layout(self.rebalance.status)
        metrics.watch_counters("everywhere", "Tables kept on every node",
                               lambda: self.everywhere.counters)
        metrics.watch_counters("upload_memory", "Uploads over --upload-memory",
                               lambda: budget.counters)
        metrics.watch_counters("lifecycle", "Lifecycle worker",
                               lambda: dict(self.lifecycle.totals,
                                            passes=self.lifecycle.passes))
        metrics.watch_counters("scrub", "Scrubber", self.scrubber.counters)
        metrics.watch_counters("gc", "Garbage collection", lambda: self.gc.counters)
        metrics.watch_counters("gc_references", "Chunk-use questions GC asked other nodes",
                               lambda: self.references.counters)
        metrics.watch_counters("access_logging", "Server access log records and objects",
                               lambda: self.server_access_log.counters)
        metrics.watch_counters("hints", "Hinted handoff", lambda: self.handoff.counters)
        metrics.watch_hint_queues(lambda: self.handoff.status()["queues"])
        metrics.watch_counters("rebalance", "Rebalancing on ring changes",
                               lambda: self.rebalance.counters)
        metrics.watch_counters("antientropy", "Anti-entropy of object records",
                               lambda: self.antientropy.counters)
        metrics.watch_counters("antientropy_chunks", "Anti-entropy of chunk sets",
                               lambda: self.antientropy.chunk_sync.counters)
        metrics.watch_antientropy_pass(lambda: self.antientropy.last_pass)
        metrics.watch_jobs(lambda: {"gc": self.gc.status(),
                                    "access_logging": self.server_access_log.job.status(),
                                    "dht_maintenance": self.cluster.dht.status()["maintenance"],
                                    "reactor_lag": metrics.lag.job.status(),
                                    "hint_delivery": self.handoff.status()["delivery"],
                                    "rebalance": self.rebalance.status()["job"],
                                    "antientropy": self.antientropy.status()["job"]})

    def jobs_status(self):
        """The local background jobs' counters, for ``/_z4/status``."""
        return {"gc": self.gc.status(), "lifecycle": self.lifecycle.status(),
                "scrub": self.scrubber.status(),
                "access_logging": (self.server_access_log.status()
                                   if self.server_access_log is not None else None),
                "system_tables": self.everywhere.status(),
                "hints": self.handoff.status(),
                "rebalance": self.rebalance.status(),
                "antientropy": self.antientropy.status()}

    def reload(self):
        """SIGHUP: read the TLS certificate again, reopen the access log."""
        self.reload_tls()
        if self.access_log is not None:
            self.access_log.reopen()
            self.log.info("access log reopened: {path}", path=self.access_log.path)

    def reload_tls(self):
        """Read --tls-cert and --tls-key again (SIGHUP): new connections get
        the new certificate; an unusable pair is logged and the old one kept."""
        if self._tls_context is None:
            self.log.info("reload: no --tls-cert to read again")
            return
        try:
            self._tls_context.reload()
        except TLSConfigError as e:
            self.log.error("TLS certificate not reloaded, still serving the old one: "
                           "{reason}", reason=str(e))
        else:
            self.log.info("TLS certificate reloaded from {cert}", cert=self.tls[0])

    def _write_node_file(self):
        info = {"id": self.node_id, "s3_host": self.host, "s3_port": self.s3_port,
                "s3_scheme": self.scheme, "pid": os.getpid(), "version": __version__}
        path = os.path.join(self.data_dir, NODE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(info, f)
        os.replace(path + ".tmp", path)

    async def _ensure_admin_key(self):
        """An admin key exists after this: from Z4_ACCESS_KEY/Z4_SECRET_KEY
        if set, else the saved one, else a new one printed once and saved to
        the credentials file (owner-only)."""
        wanted_id = self.environ.get("Z4_ACCESS_KEY")
        wanted_secret = self.environ.get("Z4_SECRET_KEY")
        if bool(wanted_id) != bool(wanted_secret):
            raise RuntimeError("set both Z4_ACCESS_KEY and Z4_SECRET_KEY, or neither")
        current = self.system.key_by_name(ADMIN_KEY_NAME)
        if wanted_id:
            if current is not None and (current.access_key_id, current.secret) == (
                    wanted_id, wanted_secret):
                return
            if current is not None:
                await self.system.delete_key(ADMIN_KEY_NAME)
            await self.system.create_key(ADMIN_KEY_NAME, is_admin=True,
                                         access_key_id=wanted_id, secret=wanted_secret)
            self.log.info("admin key {id} taken from Z4_ACCESS_KEY", id=wanted_id)
            return
        if current is not None:
            return
        key = await self.system.create_key(ADMIN_KEY_NAME, is_admin=True)
        path = os.path.join(self.data_dir, CREDENTIALS_FILE)
        # Durable: the key is committed, and this file is its only copy
        # when no terminal saw it printed.
        durable.write_file(path, (f"[default]\naws_access_key_id = {key.access_key_id}\n"
                                  f"aws_secret_access_key = {key.secret}\n").encode())
        # Printed straight to the terminal, never through the log: secrets
        # do not land in logs.
        terminal = sys.__stdout__
        if terminal is not None and terminal.isatty():
            terminal.write(
                "\nz4node created an admin key (shown once, saved to "
                f"{path}):\n  access key: {key.access_key_id}\n"
                f"  secret key: {key.secret}\n\n")
            terminal.flush()
        self.log.info("created admin key {id}; credentials saved to {path}",
                      id=key.access_key_id, path=path)

    def stopService(self):
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        self._notify_systemd(b"STOPPING=1")
        if self.cluster is not None and self.cluster.draining and not self.rebalance.drained():
            # A stop cannot be refused; say loudly what it may cost. The
            # drain resumes when the node starts again (DATA/draining).
            self.log.error("stopping while draining, before the drain finished: this node "
                           "may hold the last copy of some data; start it again and wait "
                           "for `z4 cluster drain --watch` to say it is drained")
        # No new connections from here on; the requests in progress finish
        # while the cluster is still joined (they need their peers), then
        # the children stop, the cluster service last, leaving gracefully.
        for listener in self._listeners:
            await listener.stopListening()
        self._listeners = []
        if self._admin_socket_path is not None:
            self._admin_socket_path.close()
        if self._site is not None:
            timeout = (self.options or {}).get("stop-timeout", DEFAULT_STOP_TIMEOUT_SECONDS)
            if self._site.channels:
                self.log.info("stopping: letting requests in progress finish "
                              "(at most {t} s)", t=timeout)
            cut = await self._site.drain(self.reactor, timeout)
            if cut:
                self.log.warn("stopping: cut {n} request(s) still running after "
                              "--stop-timeout {t} s", n=cut, t=timeout)
        if self.server_access_log is not None:
            # The records of the requests just finished, while the object
            # layer still runs.
            await self.server_access_log.stop()
        if self.rotation is not None:
            # The batch in flight commits or not; the cursor says which.
            await self.rotation.stop()
        await super().stopService()
        if self.metrics is not None:
            self.metrics.lag.stop()
        if self.access_log is not None:
            self.access_log.close()
        self.chunks.stop()
        self.meta.stop()
        os.close(self._lock_fd)


def lifecycle_settings(options, environ):
    """(interval seconds or None, test day seconds or None, dry run) from
    the options, else the environment (Z4_LIFECYCLE_INTERVAL,
    Z4_LIFECYCLE_TEST_DAY_SECONDS, Z4_LIFECYCLE_DRY_RUN)."""
    def seconds(option, variable):
        value = options.get(option)
        if value is None and environ.get(variable):
            try:
                value = float(environ[variable])
            except ValueError:
                value = -1
            if not value > 0:
                raise RuntimeError(f"{variable} must be a positive number of seconds")
        return value
    interval = seconds("lifecycle-interval", "Z4_LIFECYCLE_INTERVAL")
    day = seconds("lifecycle-test-day-seconds", "Z4_LIFECYCLE_TEST_DAY_SECONDS")
    if day is not None and interval is None:
        # Like Ceph's rgw_lc_debug_interval: with short days, a pass a day.
        interval = day
    dry_run = bool(options.get("lifecycle-dry-run")) or \
        environ.get("Z4_LIFECYCLE_DRY_RUN", "").lower() in ("1", "true", "yes")
    return interval, day, dry_run


# Seconds between deliveries of server access logs; S3 delivers within
# the hour, typically minutes.
ACCESS_LOGGING_INTERVAL = 300.0


def access_logging_interval(environ):
    """Seconds between deliveries of server access logs: 300, or
    $Z4_ACCESS_LOGGING_INTERVAL (tests set a second or two)."""
    text = environ.get("Z4_ACCESS_LOGGING_INTERVAL")
    if not text:
        return ACCESS_LOGGING_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise RuntimeError("Z4_ACCESS_LOGGING_INTERVAL must be a positive number of seconds")
    return value
