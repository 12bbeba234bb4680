"""Operating real ``twistd z4node`` processes: /metrics scraped with
prometheus_client's own parser moves with the requests made, the JSON
node log and the access log hold one JSON object a line and never a
secret or a signature, and the health answers follow a cluster of three
through two node kills.

Every process a test starts, it stops (addCleanup); everything is on
127.0.0.1. Waits poll with generous deadlines, never fixed sleeps.
"""

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.nodeprocess import SOURCE_ROOT, NodeProcess
from tests.test_cluster_processes import ClusterNode

TOKEN = "metrics-test-token-0123456789"


def fetch(url, headers=None):
    """(status, body) of a GET; a refused connection raises OSError."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(node, token=TOKEN):
    status, body = fetch(node.endpoint + "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200, (status, body)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for s in family.samples}


def wait_for(condition, what, deadline=90.0):
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not in {deadline} s: {what}")
        time.sleep(0.2)


class MetricsAndLogsTests(TestCase):
    timeout = 180

    def setUp(self):
        self.access_log = os.path.abspath(self.mktemp())
        self.node = NodeProcess(self, env={"Z4_METRICS_TOKEN": TOKEN},
                                args=["--access-log", self.access_log,
                                      "--log-format", "json"])
        self.node.start()

    def test_counters_move_with_requests(self):
        node = self.node
        self.assertEqual(fetch(node.endpoint + "/metrics")[0], 401)
        self.assertEqual(fetch(node.endpoint + "/metrics",
                               {"Authorization": "Bearer not-the-token"})[0], 401)
        s3 = node.client()
        # A bucket named "metrics" is still a bucket: signed requests for
        # /metrics are S3 requests.
        s3.create_bucket(Bucket="metrics")
        before = scrape(node)
        body = os.urandom(4096)
        for i in range(5):
            s3.put_object(Bucket="metrics", Key=f"k{i}", Body=body)
        for i in range(5):
            self.assertEqual(s3.get_object(Bucket="metrics", Key=f"k{i}")["Body"].read(),
                             body)
        with self.assertRaises(ClientError):
            s3.get_object(Bucket="metrics", Key="missing")
        self.assertEqual([o["Key"] for o in s3.list_objects_v2(Bucket="metrics")["Contents"]],
                         [f"k{i}" for i in range(5)])
        after = scrape(node)

        def moved(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0) - before.get(key, 0)
        self.assertEqual(moved("z4_s3_requests_total", operation="PutObject", status="200"), 5)
        self.assertEqual(moved("z4_s3_requests_total", operation="GetObject", status="200"), 5)
        self.assertEqual(moved("z4_s3_requests_total", operation="GetObject", status="404"), 1)
        self.assertEqual(moved("z4_s3_requests_total", operation="ListObjectsV2",
                               status="200"), 1)
        self.assertGreaterEqual(moved("z4_s3_received_bytes_total", operation="PutObject"),
                                5 * 4096)
        self.assertGreaterEqual(moved("z4_s3_sent_bytes_total", operation="GetObject"),
                                5 * 4096)
        self.assertEqual(moved("z4_s3_request_duration_seconds_count",
                               operation="GetObject"), 6)
        self.assertEqual(moved("z4_s3_request_duration_seconds_bucket",
                               operation="GetObject", le="+Inf"), 6)
        self.assertGreater(after[("process_resident_memory_bytes", ())], 0)
        self.assertGreater(after[("process_open_fds", ())], 0)
        self.assertEqual(after[("z4_swim_members", (("state", "alive"),))], 1)
        self.assertEqual(after[("z4_ring_members", ())], 1)
        self.assertEqual(sum(after[("z4_layout_state", (("state", state),))]
                             for state in ("settled", "waiting", "moving")), 1)
        # Per-bucket counts, kept as the objects are written.
        self.assertEqual(moved("z4_bucket_objects", bucket="metrics"), 5)
        self.assertEqual(moved("z4_bucket_bytes", bucket="metrics"), 5 * 4096)
        s3.delete_object(Bucket="metrics", Key="k0")
        counts = scrape(node)
        self.assertEqual(counts[("z4_bucket_objects", (("bucket", "metrics"),))], 4)
        self.assertEqual(counts[("z4_bucket_version_bytes", (("bucket", "metrics"),))],
                         4 * 4096)
        # The example dashboard and alert rules ask only for metrics that
        # exist.
        names = {name for name, _ in after}
        names |= {name.rsplit("_", 1)[0] for name in names}
        for path in ("etc/grafana-dashboard.json", "etc/z4node-alerts.yml"):
            with open(os.path.join(SOURCE_ROOT, path)) as f:
                used = set(re.findall(r"\b((?:z4|process)_[a-z0-9_]+)", f.read()))
            self.assertTrue(used)
            self.assertEqual(used - names, set(), path)
        # The reactor-lag probe runs every second.
        wait_for(lambda: scrape(node).get(("z4_reactor_lag_probe_seconds_count", ()), 0) >= 2,
                 "two reactor lag probes")

    def test_logs_are_json_and_hold_no_secret(self):
        node = self.node
        access_key, secret = node.credentials()
        s3 = node.client(signature_version="s3v4")
        s3.create_bucket(Bucket="logs")
        s3.put_object(Bucket="logs", Key="a b", Body=b"hello")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "logs", "Key": "a b"},
                                        ExpiresIn=300)
        signature = parse_qs(urlparse(url).query)["X-Amz-Signature"][0]
        self.assertEqual(fetch(url), (200, b"hello"))
        # Wrong signatures and a broken presigned URL are logged too.
        with self.assertRaises(ClientError):
            node.client((access_key, "not-the-secret")).list_buckets()
        self.assertEqual(fetch(url.replace(signature, "0" * 64))[0], 403)

        def presigned_line():
            with open(self.access_log) as f:
                lines = [json.loads(line) for line in f]
            return [line for line in lines if line["operation"] == "GetObject"
                    and line["status"] == 200 and line["bytes_out"] == 5] and lines
        lines = wait_for(presigned_line, "the presigned GET in the access log", 30)
        for line in lines:
            self.assertEqual(set(line), {"time", "request_id", "remote", "key_id", "method",
                                         "resource", "operation", "status", "bytes_in",
                                         "bytes_out", "duration"})
        get = [line for line in lines if line["operation"] == "GetObject"
               and line["status"] == 200][0]
        self.assertEqual((get["key_id"], get["resource"], get["remote"]),
                         (access_key, "/logs/a b", "127.0.0.1"))
        self.assertEqual(len(get["request_id"]), 16)
        self.assertGreaterEqual(get["duration"], 0)
        put = [line for line in lines if line["operation"] == "PutObject"][0]
        self.assertGreaterEqual(put["bytes_in"], 5)
        self.assertIn(403, [line["status"] for line in lines])
        # logrotate moves the file; SIGHUP makes the node start a new one.
        os.rename(self.access_log, self.access_log + ".1")
        node.process.send_signal(signal.SIGHUP)
        wait_for(lambda: fetch(url)[0] == 200 and os.path.exists(self.access_log)
                 and os.path.getsize(self.access_log) > 0, "a new access log after SIGHUP")
        node.stop()
        with open(self.access_log + ".1") as f:
            access = f.read()
        with open(self.access_log) as f:
            access += f.read()
        node_log = node.log()
        events = [json.loads(line) for line in node_log.splitlines()]
        self.assertTrue(any("serving S3" in e.get("log_format", "") for e in events))
        for text in (access, node_log):
            self.assertNotIn(secret, text)
            self.assertNotIn(signature, text)
            self.assertNotIn("X-Amz-Signature", text)


def health(node, check):
    """The status of /_z4/health/CHECK, or None if the node does not answer."""
    try:
        status, body = fetch(f"{node.endpoint}/_z4/health/{check}")
    except OSError:
        return None
    assert json.loads(body)["status"] == ("ok" if status == 200 else "unavailable"), body
    return status


class HealthProcessTests(TestCase):
    timeout = 240

    def test_health_through_node_kills(self):
        base = os.path.abspath(self.mktemp())
        first = ClusterNode(self, base, 0)
        nodes = [first] + [ClusterNode(self, base, i, join=first.gossip) for i in (1, 2)]
        for node in nodes:
            node.start()
        wait_for(lambda: all(health(n, "cluster") == 200 for n in nodes),
                 "every node sees the whole cluster alive")
        for node in nodes:
            self.assertEqual((health(node, "live"), health(node, "ready")), (200, 200))
        # The answers reveal nothing but the verdict.
        status, body = fetch(first.endpoint + "/_z4/health/ready")
        self.assertEqual(json.loads(body), {"status": "ok"})

        nodes[2].kill(signal.SIGKILL)
        self.assertIsNone(health(nodes[2], "live"))
        wait_for(lambda: all(health(n, "cluster") == 503 for n in nodes[:2]),
                 "the survivors see the cluster degraded")
        # Two of three alive: still a majority, still ready.
        for node in nodes[:2]:
            self.assertEqual((health(node, "live"), health(node, "ready")), (200, 200))

        nodes[1].kill(signal.SIGKILL)
        wait_for(lambda: health(first, "ready") == 503, "the last node loses its majority")
        self.assertEqual((health(first, "live"), health(first, "cluster")), (200, 503))
        status, body = fetch(first.endpoint + "/_z4/health/ready")
        self.assertEqual(json.loads(body), {"status": "unavailable",
                                            "reason": "no majority of the layout alive"})
