"""The metrics of one node (z4node.web.metrics), the health answers
(z4node.web.health) and the access log (z4node.web.accesslog), in
process: request accounting as Prometheus reads it (through
prometheus_client's own parser), the reactor-lag probe on a Clock, who
may scrape, which requests /metrics claims from S3, the health verdicts
for each membership state, and when access-log lines reach the file."""

import json
import os

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.test_channel import Network
from z4node.cluster.channel import RemoteError
from z4node.cluster.members import State
from z4node.tap import Options
from z4node.web.accesslog import AccessLog
from z4node.web.health import NodeHealth
from z4node.web.metrics import MetricsAccess, MetricsResource, NodeMetrics


def samples(metrics):
    """{(sample name, sorted label items): value} of a scrape."""
    text = metrics.exposition().decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class FakeCall:
    def __init__(self, operation):
        self.operation = operation


class RequestMetricsTests(TestCase):
    def test_requests_bytes_and_latency(self):
        metrics = NodeMetrics(Clock(), "node-a")
        metrics.answered(None, FakeCall("GetObject"), "id1", 200, 0, 4096, 0.002)
        metrics.answered(None, FakeCall("GetObject"), "id2", 200, 0, 4096, 0.2)
        metrics.answered(None, FakeCall("GetObject"), "id3", 404, 0, 300, 0.0005)
        metrics.answered(None, FakeCall("PutObject"), "id4", 200, 5000, 0, 0.01)
        metrics.answered(None, None, "id5", 400, 0, 200, 0.0001)
        metrics.answered(None, FakeCall("PutObject"), "id6", None, 100, 0, 3.0)
        got = samples(metrics)
        get = ("operation", "GetObject")
        self.assertEqual(got[("z4_s3_requests_total", (get, ("status", "200")))], 2)
        self.assertEqual(got[("z4_s3_requests_total", (get, ("status", "404")))], 1)
        self.assertEqual(got[("z4_s3_requests_total",
                              (("operation", "Unrouted"), ("status", "400")))], 1)
        # A client that left unanswered: nginx's 499.
        self.assertEqual(got[("z4_s3_requests_total",
                              (("operation", "PutObject"), ("status", "499")))], 1)
        self.assertEqual(got[("z4_s3_sent_bytes_total", (get,))], 4096 * 2 + 300)
        self.assertEqual(got[("z4_s3_received_bytes_total",
                              (("operation", "PutObject"),))], 5100)
        self.assertEqual(got[("z4_s3_request_duration_seconds_count", (get,))], 3)
        self.assertAlmostEqual(got[("z4_s3_request_duration_seconds_sum", (get,))], 0.2025)
        # Cumulative buckets.
        self.assertEqual(got[("z4_s3_request_duration_seconds_bucket",
                              (("le", "0.001"), get))], 1)
        self.assertEqual(got[("z4_s3_request_duration_seconds_bucket",
                              (("le", "0.0025"), get))], 2)
        self.assertEqual(got[("z4_s3_request_duration_seconds_bucket",
                              (("le", "+Inf"), get))], 3)
        self.assertEqual(got[("z4_node_info", (("id", "node-a"), ("version", "0.1.0")))], 1)

    def test_own_registry_per_node(self):
        """Two nodes in one process count apart (no global registry)."""
        a, b = NodeMetrics(Clock(), "a"), NodeMetrics(Clock(), "b")
        a.answered(None, FakeCall("GetObject"), "x", 200, 0, 1, 0.001)
        key = ("z4_s3_requests_total", (("operation", "GetObject"), ("status", "200")))
        self.assertEqual(samples(a)[key], 1)
        self.assertNotIn(key, samples(b))

    def test_hint_queues_per_target(self):
        metrics = NodeMetrics(Clock(), "a")
        queues = {"node-3": {"count": 12, "bytes": 3_000_000, "oldest_age": 95.5}}
        metrics.watch_hint_queues(lambda: queues)
        got = samples(metrics)
        target = (("target", "node-3"),)
        self.assertEqual((got[("z4_hints_queued", target)],
                          got[("z4_hints_queued_bytes", target)],
                          got[("z4_hints_oldest_age_seconds", target)]), (12, 3_000_000, 95.5))
        queues.clear()
        self.assertNotIn(("z4_hints_queued", target), samples(metrics))

    def test_peer_calls_by_operation(self):
        net = Network(self)
        metrics = NodeMetrics(net.clock, "client")
        metrics.watch_peer_calls(net.client)
        for _ in range(3):
            self.successResultOf(net.call("echo"))
        self.failureResultOf(net.call("refuse"), RemoteError)
        got = samples(metrics)
        self.assertEqual(got[("z4_peer_call_seconds_count", (("op", "echo"),))], 3)
        self.assertEqual(got[("z4_peer_call_seconds_count", (("op", "refuse"),))], 1)
        self.assertEqual(got[("z4_peer_call_failures_total", (("op", "refuse"),))], 1)
        self.assertNotIn(("z4_peer_call_failures_total", (("op", "echo"),)), got)

    def test_the_last_anti_entropy_pass(self):
        metrics = NodeMetrics(Clock(), "node-a")
        last = None
        metrics.watch_antientropy_pass(lambda: last)
        self.assertNotIn(("z4_antientropy_last_pass_repaired", ()), samples(metrics))
        last = {"finished": 1700000000.5, "seconds": 2.5, "repaired": 7}
        got = samples(metrics)
        self.assertEqual([got[(f"z4_antientropy_last_pass_{name}", ())] for name in (
            "timestamp_seconds", "seconds", "repaired")], [1700000000.5, 2.5, 7])

    def test_layout_state_and_placed_ring(self):
        metrics = NodeMetrics(Clock(), "node-a")
        status = {"state": "moving", "progress": 0.25, "settled_ring": "a1b2"}
        metrics.watch_layout(lambda: status)
        got = samples(metrics)
        self.assertEqual([got[("z4_layout_state", (("state", name),))]
                          for name in ("settled", "waiting", "moving")], [0, 0, 1])
        self.assertEqual(got[("z4_layout_move_progress", ())], 0.25)
        self.assertEqual(got[("z4_layout_placed_info", (("fingerprint", "a1b2"),))], 1)
        status.update(state="settled", progress=None)
        got = samples(metrics)
        self.assertEqual(got[("z4_layout_state", (("state", "settled"),))], 1)
        self.assertEqual(got[("z4_layout_move_progress", ())], 0)

    def test_process_metrics(self):
        got = samples(NodeMetrics(Clock(), "a"))
        self.assertGreater(got[("process_resident_memory_bytes", ())], 0)
        self.assertGreater(got[("process_open_fds", ())], 0)


class ReactorLagTests(TestCase):
    def test_lateness_measured_and_errors_survived(self):
        clock = Clock()
        metrics = NodeMetrics(clock, "a")
        lag = metrics.lag
        lag.start()
        self.addCleanup(lag.stop)
        clock.advance(1.0)
        self.assertEqual(samples(metrics)[("z4_reactor_lag_seconds", ())], 0)
        # The reactor was stuck until 2.5 s past the next probe's due
        # time (2.0).
        clock.advance(3.5)
        self.assertEqual(samples(metrics)[("z4_reactor_lag_seconds", ())], 2.5)
        # Next due at 5.0: on time again.
        clock.advance(0.5)
        self.assertEqual(samples(metrics)[("z4_reactor_lag_seconds", ())], 0)
        # A probe that fails is counted, and the probes go on.
        real_set = lag.last.set
        lag.last.set = lambda value: 1 / 0
        clock.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        lag.last.set = real_set
        clock.advance(1.3)  # at 7.3, due at 7.0
        got = samples(metrics)
        self.assertAlmostEqual(got[("z4_reactor_lag_seconds", ())], 0.3)
        self.assertEqual(lag.job.failures, 1)
        self.assertEqual(got[("z4_reactor_lag_probe_seconds_count", ())], 4)


def render(resource, headers=(), method=b"GET"):
    request = DummyRequest([b"metrics"])
    request.method = method
    request.uri = b"/metrics"
    for name, value in headers:
        request.requestHeaders.setRawHeaders(name, [value])
    body = resource.render(request)
    if body is NOT_DONE_YET:
        body = b"".join(request.written)
    return request.responseCode or 200, body


class MetricsAccessTests(TestCase):
    def setUp(self):
        self.metrics = NodeMetrics(Clock(), "a")

    def test_refused_without_a_token_unless_public(self):
        status, body = render(MetricsResource(None, MetricsAccess()))
        self.assertEqual(status, 403)
        self.assertIn(b"--metrics-token", body)
        status, body = render(MetricsResource(self.metrics, MetricsAccess(public=True)))
        self.assertEqual(status, 200)
        self.assertIn(b"z4_node_info", body)

    def test_bearer_token(self):
        resource = MetricsResource(self.metrics, MetricsAccess("s3cret-token"))
        self.assertEqual(render(resource)[0], 401)
        self.assertEqual(render(resource, [(b"authorization", b"Bearer wrong")])[0], 401)
        self.assertEqual(render(resource, [(b"authorization", b"Basic s3cret-token")])[0],
                         401)
        status, body = render(resource, [(b"authorization", b"Bearer s3cret-token")])
        self.assertEqual(status, 200)
        self.assertIn(b"z4_node_info", body)

    def test_failed_collection_is_a_plain_500(self):
        class Broken:
            def collect(self):
                raise KeyError("counter renamed")
        self.metrics.registry.register(Broken())
        status, body = render(MetricsResource(self.metrics, MetricsAccess(public=True)))
        self.assertEqual((status, body),
                         (500, b"collecting metrics failed; the node log says why\n"))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_bucket_counts_are_read_before_the_scrape_answers(self):
        reads = []

        def read():
            reads.append(Deferred())
            return reads[-1]
        self.metrics.watch_bucket_usage(read)
        request = DummyRequest([b"metrics"])
        request.method, request.uri = b"GET", b"/metrics"
        resource = MetricsResource(self.metrics, MetricsAccess(public=True))
        self.assertIs(resource.render(request), NOT_DONE_YET)
        self.assertEqual(request.written, [])
        reads[0].callback({"photos": {"objects": 3, "bytes": 300, "versions": 4,
                                      "version_bytes": 400}})
        got = {(s.name, tuple(s.labels.items())): s.value
               for family in text_string_to_metric_families(
                   b"".join(request.written).decode("utf-8")) for s in family.samples}
        labels = (("bucket", "photos"),)
        self.assertEqual([got[(name, labels)] for name in (
            "z4_bucket_objects", "z4_bucket_bytes", "z4_bucket_versions",
            "z4_bucket_version_bytes")], [3, 300, 4, 400])
        self.assertEqual(request.finished, 1)

    def test_claims_only_unsigned_gets_of_the_path(self):
        def request(uri=b"/metrics", method=b"GET", authorization=None):
            r = DummyRequest([b"metrics"])
            r.method, r.uri = method, uri
            if authorization:
                r.requestHeaders.setRawHeaders(b"authorization", [authorization])
            return r
        claims = MetricsResource.claims
        self.assertTrue(claims(request()))
        self.assertTrue(claims(request(method=b"HEAD")))
        self.assertTrue(claims(request(authorization=b"Bearer t")))
        # S3 requests for a bucket named "metrics" stay S3 requests.
        self.assertFalse(claims(request(
            authorization=b"AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request")))
        self.assertFalse(claims(request(uri=b"/metrics?list-type=2")))
        self.assertFalse(claims(request(uri=b"/metrics/key")))
        self.assertFalse(claims(request(method=b"PUT")))


class FakeMember:
    def __init__(self, state):
        self.state = state


class FakeMembership:
    def __init__(self, states, joined=True):
        self.states = states
        self.joined = joined

    def members(self, states):
        return [FakeMember(s) for s in self.states if s in states]


class FakeCluster:
    def __init__(self, membership):
        self.membership = membership


class Fired:
    called = True


class NotFired:
    called = False


class HealthTests(TestCase):
    def health(self, states, joined=True, join_given=False, ready=Fired()):
        cluster = FakeCluster(FakeMembership(states, joined))
        return NodeHealth(ready, lambda: cluster, join_given)

    def test_verdicts(self):
        a, s, d = State.ALIVE, State.SUSPECT, State.DEAD
        ok = self.health([a, a, a])
        self.assertEqual((ok.live(), ok.ready(), ok.cluster()), (None, None, None))
        one_dead = self.health([a, a, d, State.LEFT])
        self.assertIsNone(one_dead.ready())
        self.assertEqual(one_dead.cluster(), "not every layout member alive")
        suspect = self.health([a, s, a])
        self.assertIsNone(suspect.ready())
        self.assertEqual(suspect.cluster(), "not every layout member alive")
        minority = self.health([a, d, d])
        self.assertEqual(minority.ready(), "no majority of the layout alive")
        self.assertEqual(minority.cluster(), "no majority of the layout alive")
        half = self.health([a, a, d, d])
        self.assertEqual(half.ready(), "no majority of the layout alive")

    def test_starting_and_joining(self):
        starting = self.health([State.ALIVE], ready=NotFired())
        self.assertEqual(starting.ready(), "starting")
        self.assertIsNone(starting.live())
        no_cluster = NodeHealth(Fired(), lambda: None, False)
        self.assertEqual(no_cluster.ready(), "starting")
        joining = self.health([State.ALIVE], joined=False, join_given=True)
        self.assertEqual(joining.ready(), "joining")
        # Without --join there is nothing to wait for.
        self.assertIsNone(self.health([State.ALIVE], joined=False).ready())


class FakeAddress:
    host = "127.0.0.1"


class FakeRequest:
    method = b"PUT"

    def getClientAddress(self):
        return FakeAddress()


class FakeCredentials:
    access_key_id = "AKEXAMPLE"


class SignedCall:
    operation = "PutObject"
    resource = "/b/k"
    credentials = FakeCredentials()


class AccessLogTests(TestCase):
    def test_lines_written_each_second_and_on_close(self):
        clock = Clock()
        clock.advance(1_800_000_000)
        path = os.path.abspath(self.mktemp())
        log = AccessLog(path, clock)
        log.start()
        log.answered(FakeRequest(), SignedCall(), "RID1", 200, 10, 0, 0.25)
        self.assertEqual(os.path.getsize(path), 0)
        clock.advance(1.0)
        with open(path) as f:
            self.assertEqual(json.loads(f.read()), {
                "time": "2027-01-15T08:00:00.000+00:00", "request_id": "RID1",
                "remote": "127.0.0.1", "key_id": "AKEXAMPLE", "method": "PUT",
                "resource": "/b/k", "operation": "PutObject", "status": 200,
                "bytes_in": 10, "bytes_out": 0, "duration": 0.25})
        # A request that did not parse, and a client that left.
        log.answered(FakeRequest(), None, "RID2", None, 0, 0, 0.001)
        log.close()
        with open(path) as f:
            last = json.loads(f.read().splitlines()[-1])
        self.assertEqual((last["request_id"], last["key_id"], last["operation"],
                          last["status"]), ("RID2", None, None, None))


class LogOptionsTests(TestCase):
    def test_bad_values_are_usage_errors(self):
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--log-format", "xml"])
        with self.assertRaises(usage.UsageError):
            Options().parseOptions(["--access-log", "/nonexistent-dir/access.log"])
        options = Options()
        options.parseOptions(["--log-format", "json", "--access-log", "access.log"])
        self.assertEqual(options["access-log"], os.path.abspath("access.log"))
