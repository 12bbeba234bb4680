"""Prometheus metrics of one node, served at ``/metrics`` on the S3 port.

Owns: the node's own :class:`~prometheus_client.CollectorRegistry` (never
the process-global one: two nodes in one test process must not mix), the
request accounting the S3 pipeline feeds (:class:`RequestStats`), the
collectors that read the counters the rest of the node already keeps
(cluster, peer channel, everywhere tables, periodic jobs) at scrape time,
the reactor-lag probe, and the ``/metrics`` resource with its bearer-token
check. It changes nothing it reads. docs/operations.md lists every metric.

Counting costs the S3 hot path a dict update and a bisect per request; the
exposition is built only when Prometheus scrapes.
"""

import bisect
import hmac

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, InfoMetricFamily)
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from z4node import __version__
from z4node.cluster.members import State
from z4node.periodic import PeriodicJob
from z4node.web.health import layout_liveness

log = Logger()

TOKEN_ENV = "Z4_METRICS_TOKEN"

# Request latency buckets, seconds: a 4 KiB GET answers in about a
# millisecond on the test box, a large upload takes minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Operation:
    """The totals of one S3 operation."""

    __slots__ = ("bytes_in", "bytes_out", "buckets", "seconds")

    def __init__(self):
        self.bytes_in = 0
        self.bytes_out = 0
        # One count per latency bucket, plus the +Inf bucket; cumulated
        # only when scraped.
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0


class RequestStats:
    """What the S3 pipeline tells about each request it answered, kept as
    plain numbers and turned into metric families at scrape time."""

    def __init__(self):
        self.requests = {}  # (operation, status) -> count
        self.operations = {}  # operation -> _Operation

    def observe(self, operation, status, bytes_in, bytes_out, seconds):
        key = (operation, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        totals = self.operations.get(operation)
        if totals is None:
            totals = self.operations[operation] = _Operation()
        totals.bytes_in += bytes_in
        totals.bytes_out += bytes_out
        totals.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        totals.seconds += seconds

    def collect(self):
        requests = CounterMetricFamily(
            "z4_s3_requests", "S3 requests answered, by operation and status.",
            labels=["operation", "status"])
        for (operation, status), count in sorted(self.requests.items()):
            requests.add_metric([operation, str(status)], count)
        received = CounterMetricFamily(
            "z4_s3_received_bytes", "Request body bytes received, by operation.",
            labels=["operation"])
        sent = CounterMetricFamily(
            "z4_s3_sent_bytes", "Response body bytes sent, by operation.",
            labels=["operation"])
        latency = HistogramMetricFamily(
            "z4_s3_request_duration_seconds",
            "Seconds from a request's headers to the last byte of its answer.",
            labels=["operation"])
        for operation, totals in sorted(self.operations.items()):
            received.add_metric([operation], totals.bytes_in)
            sent.add_metric([operation], totals.bytes_out)
            cumulative = 0
            buckets = []
            for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), totals.buckets):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            latency.add_metric([operation], buckets, totals.seconds)
        return [requests, received, sent, latency]


def _bound(value):
    return "+Inf" if value == float("inf") else repr(value)


def _counter(name, help_text, value):
    family = CounterMetricFamily(name, help_text)
    family.add_metric([], value)
    return family


def _gauge(name, help_text, value):
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family


class ClusterCollector:
    """SWIM members and health, the layout, the ring and the DHT, read
    from :class:`~z4node.cluster.service.ClusterService` and its parts
    (their counters are :class:`CountersCollector`\\ s)."""

    def __init__(self, cluster):
        self.cluster = cluster

    def collect(self):
        cluster = self.cluster
        membership = cluster.membership
        states = GaugeMetricFamily("z4_swim_members", "Members known, by SWIM state.",
                                   labels=["state"])
        counts = {state: 0 for state in State}
        for member in membership.all_members():
            counts[member.state] += 1
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states
        yield _gauge("z4_swim_health_score",
                     "Lifeguard local health: 0 is healthy, higher means this node "
                     "is slow to answer probes.", membership.health.score)
        yield _gauge("z4_ring_members", "Members the ring is built from.", len(cluster.ring))
        layout, reachable, _ = layout_liveness(membership)
        yield _gauge("z4_layout_members", "Members of the layout, dead ones included.",
                     layout)
        yield _gauge("z4_layout_members_reachable",
                     "Layout members alive or suspect (worth sending to).", reachable)
        fingerprint = InfoMetricFamily("z4_ring", "The ring this node places data with; "
                                       "nodes that agree show the same fingerprint.")
        fingerprint.add_metric([], {"fingerprint": cluster.ring.fingerprint()})
        yield fingerprint
        yield _gauge("z4_dht_known_nodes", "Nodes in the DHT's routing table.",
                     cluster.dht.known_nodes())


class CountersCollector:
    """A plain counter dict as ``z4_<prefix>_<name>_total``, every key of
    it, read at scrape time: the counters a part of the node keeps (SWIM's,
    the peer channel's, the everywhere tables'), new ones included."""

    def __init__(self, prefix, what, counters):
        self.prefix = prefix
        self.what = what
        self.counters = counters

    def collect(self):
        for name, value in sorted(self.counters().items()):
            yield _counter(f"z4_{self.prefix}_{name}",
                           f"{self.what}: {name.replace('_', ' ')}.", value)


class HintQueuesCollector:
    """The hints this node holds, per target node: ``queues()`` returns
    ``HintedHandoff.status()["queues"]``."""

    def __init__(self, queues):
        self.queues = queues

    def collect(self):
        count = GaugeMetricFamily("z4_hints_queued", "Hints held for a node that was down.",
                                  labels=["target"])
        size = GaugeMetricFamily("z4_hints_queued_bytes",
                                 "Bytes of chunks held as hints for a node.", labels=["target"])
        oldest = GaugeMetricFamily("z4_hints_oldest_age_seconds",
                                   "Age of the oldest hint held for a node.", labels=["target"])
        for target, queue in sorted(self.queues().items()):
            count.add_metric([target], queue["count"])
            size.add_metric([target], queue["bytes"])
            oldest.add_metric([target], queue["oldest_age"])
        return [count, size, oldest]


class JobsCollector:
    """Runs and failed runs of the node's background jobs: ``jobs()``
    returns ``{name: PeriodicJob.status()}``."""

    def __init__(self, jobs):
        self.jobs = jobs

    def collect(self):
        runs = CounterMetricFamily("z4_job_runs", "Background job runs.", labels=["task"])
        failures = CounterMetricFamily(
            "z4_job_failures", "Background job runs that failed (each is logged).",
            labels=["task"])
        for name, status in sorted(self.jobs().items()):
            runs.add_metric([name], status["runs"])
            failures.add_metric([name], status["failures"])
        return [runs, failures]


class LastPassCollector:
    """When anti-entropy's last pass ended, how long it took and what it
    repaired; ``last_pass()`` is ``AntiEntropy.last_pass`` (None before
    the first pass: nothing is reported)."""

    def __init__(self, last_pass):
        self.last_pass = last_pass

    def collect(self):
        last = self.last_pass()
        if last is None:
            return
        yield _gauge("z4_antientropy_last_pass_timestamp_seconds",
                     "When the last anti-entropy pass ended (unix time).", last["finished"])
        yield _gauge("z4_antientropy_last_pass_seconds",
                     "How long the last anti-entropy pass took.", last["seconds"])
        yield _gauge("z4_antientropy_last_pass_repaired",
                     "Entries and chunks the last anti-entropy pass repaired.",
                     last["repaired"])


class LayoutCollector:
    """Where this node's data stands against the ring: the ring it is
    placed for (the settled ring of :mod:`z4node.replication.rebalance`)
    and whether it is moving. ``status()`` is ``Rebalancer.status()``."""

    states = ("settled", "waiting", "moving")

    def __init__(self, status):
        self.status = status

    def collect(self):
        status = self.status()
        placed = InfoMetricFamily(
            "z4_layout_placed", "The ring this node's data is placed for; once data has "
            "moved it equals z4_ring_info's fingerprint.")
        placed.add_metric([], {"fingerprint": status["settled_ring"] or ""})
        yield placed
        state = GaugeMetricFamily(
            "z4_layout_state", "1 for the state of this node's data: settled (placed for "
            "the ring in use), waiting (the ring changed; a move starts once it is stable) "
            "or moving.", labels=["state"])
        for name in self.states:
            state.add_metric([name], int(status["state"] == name))
        yield state
        yield _gauge("z4_layout_move_progress", "How much of the hash space a move has "
                     "walked (0 to 1; 0 when not moving).", status["progress"] or 0.0)


class BucketUsageCollector:
    """Objects and bytes of each bucket this node holds records of, from the
    counts its metadata store keeps (:mod:`z4node.storage.usage`; one row a
    bucket, no scan). ``read()`` fires with
    :meth:`~z4node.storage.meta.MetaStore.bucket_usage`'s answer; it is
    read before each scrape (:meth:`refresh`), on the store's reader
    threads, never on the reactor."""

    families = (
        ("objects", "z4_bucket_objects",
         "Keys whose newest version is an object (not a delete marker)."),
        ("bytes", "z4_bucket_bytes", "Bytes of the keys' newest versions."),
        ("versions", "z4_bucket_versions",
         "Versions stored, noncurrent ones and delete markers included."),
        ("version_bytes", "z4_bucket_version_bytes",
         "Bytes of every version stored, before replication."))

    def __init__(self, read):
        self.read = read
        self.usage = {}

    async def refresh(self):
        self.usage = await self.read()

    def collect(self):
        for field, name, what in self.families:
            family = GaugeMetricFamily(name, what + " Each owner of a bucket reports it.",
                                       labels=["bucket"])
            for bucket, counts in self.usage.items():
                family.add_metric([bucket], counts[field])
            yield family


class ReactorLag:
    """How late the reactor runs a timer: a probe every ``interval_seconds``
    compares when it ran with when it was due. A busy reactor (a blocking
    call, a long collection) answers every request that late."""

    interval_seconds = 1.0
    buckets = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, clock, registry):
        self._clock = clock
        self.last = Gauge("z4_reactor_lag_seconds",
                          "How late the last reactor-lag probe ran.", registry=registry)
        self.histogram = Histogram("z4_reactor_lag_probe_seconds",
                                   "How late each reactor-lag probe ran.",
                                   buckets=self.buckets, registry=registry)
        # A probe that fails is logged and counted, and the next one comes.
        self.job = PeriodicJob("reactor lag probe", clock, self.measure)
        self._start = None
        self._due = None

    def start(self):
        self._start = self._clock.seconds()
        self._due = self._start + self.interval_seconds
        self.job.start(self.interval_seconds)

    def stop(self):
        self.job.stop()

    def measure(self):
        now = self._clock.seconds()
        due, self._due = self._due, self._next_due(now)
        lag = max(0.0, now - due)
        self.last.set(lag)
        self.histogram.observe(lag)

    def _next_due(self, now):
        # LoopingCall's rule: the first interval boundary after the run.
        intervals = int((now - self._start) // self.interval_seconds) + 1
        return self._start + intervals * self.interval_seconds


class NodeMetrics:
    """The registry of one node and what feeds it. ``requests`` is fed by
    the S3 pipeline; :meth:`watch_cluster` and friends add collectors once
    the parts they read exist."""

    peer_call_buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5, 5.0, 10.0)

    def __init__(self, clock, node_id):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        info = InfoMetricFamily("z4_node", "This node.")
        info.add_metric([], {"id": node_id, "version": __version__})
        self.registry.register(_Static([info]))
        # process_resident_memory_bytes, process_open_fds, CPU and start
        # time, read from /proc at scrape time.
        ProcessCollector(registry=self.registry)
        self.lag = ReactorLag(clock, self.registry)
        # Async reads made before each scrape (collectors run on the
        # reactor and must not read the database themselves).
        self._before_scrape = []

    def watch_cluster(self, cluster):
        self.registry.register(ClusterCollector(cluster))
        # probes, probe_failures, indirect_probes, suspicions, refutations,
        # deaths_declared, ...
        self.watch_counters("swim", "SWIM", lambda: cluster.membership.counters)
        # calls, failures, connections (all operations together, push/pull
        # included).
        self.watch_counters("peer_channel", "Peer channel",
                            lambda: cluster.channel.counters)
        self.watch_peer_calls(cluster.channel)

    def watch_peer_calls(self, channel):
        """Time every call ``channel`` (a PeerChannel) makes, by operation."""
        calls = Histogram("z4_peer_call_seconds",
                          "Peer calls made, by operation: seconds until the reply's header "
                          "(failed calls included).", ["op"], buckets=self.peer_call_buckets,
                          registry=self.registry)
        failures = Counter("z4_peer_call_failures", "Peer calls that failed, by operation "
                           "(no connection, no reply in time, or an error answered).",
                           ["op"], registry=self.registry)

        def observe(op, seconds, failed):
            calls.labels(op).observe(seconds)
            if failed:
                failures.labels(op).inc()
        channel.observe = observe

    def watch_counters(self, prefix, what, counters):
        self.registry.register(CountersCollector(prefix, what, counters))

    def watch_antientropy_pass(self, last_pass):
        """The last anti-entropy pass; ``last_pass()`` is
        ``AntiEntropy.last_pass``."""
        self.registry.register(LastPassCollector(last_pass))

    def watch_layout(self, status):
        """The placed ring and moves; ``status()`` is ``Rebalancer.status()``."""
        self.registry.register(LayoutCollector(status))

    def watch_bucket_usage(self, read):
        """Per-bucket object and byte counts; ``read()`` fires with
        ``MetaStore.bucket_usage()``'s answer."""
        collector = BucketUsageCollector(read)
        self.registry.register(collector)
        self._before_scrape.append(collector.refresh)

    async def refresh(self):
        """Read what the collectors need from the database; before a scrape."""
        for refresh in self._before_scrape:
            await refresh()

    def watch_hint_queues(self, queues):
        self.registry.register(HintQueuesCollector(queues))

    def watch_jobs(self, jobs):
        self.registry.register(JobsCollector(jobs))

    def answered(self, request, call, request_id, status, bytes_in, bytes_out, seconds):
        """Count a request that is over (an ``S3Api.answered`` hook). One
        that failed before routing (a bad signature, a malformed path) is
        operation "Unrouted"; one whose client left unanswered is status
        499, nginx's "client closed request"."""
        operation = call.operation if call is not None and call.operation else "Unrouted"
        self.requests.observe(operation, 499 if status is None else status,
                              bytes_in, bytes_out, seconds)

    def exposition(self):
        return generate_latest(self.registry)


class _Static:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


class MetricsAccess:
    """Who may scrape: a request bearing ``Authorization: Bearer TOKEN``,
    or anyone with ``public``; nobody when there is neither (metrics are
    refused unless the operator chose a token or said they are public)."""

    def __init__(self, token=None, public=False):
        self.token = token.encode("utf-8") if token else None
        self.public = public

    @property
    def enabled(self):
        return self.public or self.token is not None

    def refusal(self, request):
        """None if ``request`` may scrape; else (status, message)."""
        if self.public:
            return None
        if self.token is None:
            return 403, ("metrics are off: start the node with --metrics-token "
                         "(or $Z4_METRICS_TOKEN), or --metrics-public")
        scheme, _, given = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(),
                                                                   self.token):
            return 401, "a bearer token is needed: Authorization: Bearer TOKEN"
        return None


class MetricsResource(Resource):
    """``/metrics``: the exposition, for a request :class:`MetricsAccess`
    allows."""

    isLeaf = True

    def __init__(self, metrics, access):
        Resource.__init__(self)
        self.metrics = metrics
        self.access = access

    @staticmethod
    def claims(request):
        """Whether ``request`` is for ``/metrics`` rather than S3: a GET or
        HEAD of exactly that path, with no query and no S3 signature. A
        signed request or one with a query (ListObjects of a bucket named
        "metrics") stays an S3 request."""
        if request.method not in (b"GET", b"HEAD") or request.uri != b"/metrics":
            return False
        authorization = request.getHeader(b"authorization")
        return authorization is None or authorization.lower().startswith(b"bearer ")

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        refusal = self.access.refusal(request)
        if refusal is not None:
            return _refuse(request, *refusal)
        finished = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))

        async def scrape():
            await self.metrics.refresh()
            return self.metrics.exposition()

        def respond(result):
            if isinstance(result, Failure):
                log.failure("collecting metrics failed", result)
                body = _refuse(request, 500, "collecting metrics failed; the node log says why")
            else:
                request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
                body = result
            if not finished:
                request.write(body)
                request.finish()
        Deferred.fromCoroutine(scrape()).addBoth(respond)
        return NOT_DONE_YET


def _refuse(request, status, message):
    """Set up a refusal's status and headers; its body."""
    request.setResponseCode(status)
    if status == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="z4node metrics"')
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return message.encode("utf-8") + b"\n"
