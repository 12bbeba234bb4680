"""Tests for the history checker (tests/history.py) on histories built by
hand, and with it a real node, then a cluster of three, under concurrent
clients, SIGKILLed and restarted mid-run: no acknowledged write lost, no
stale read, nothing deleted back."""

import random
import signal
import threading
import time

from botocore.exceptions import BotoCoreError, ClientError
from twisted.internet import defer, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.history import History, check
from tests.nodeprocess import NodeProcess
from tests.test_cluster_processes import all_alive, cluster_with_bucket, start_cluster


class Script:
    """Builds a history op by op on a clock that moves only when told."""

    def __init__(self):
        self.now = 0.0
        self.history = History(clock=lambda: self.now)

    def at(self, t):
        self.now = t
        return self

    def write(self, key, value, start, end=None):
        op = self.at(start).history.invoke("write", key, value)
        if end is None:
            self.history.fail(op)
        else:
            self.at(end).history.complete(op)
        return op

    def read(self, key, value, start, end):
        op = self.at(start).history.invoke("read", key)
        self.at(end).history.complete(op, value)
        return op


class CheckerTests(SynchronousTestCase):
    def test_sequential_history_is_fine(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.read("k", "a", 2, 3)
        s.write("k", "b", 4, 5)
        s.read("k", "b", 6, 7)
        s.write("k", None, 8, 9)
        s.read("k", None, 10, 11)
        self.assertEqual(check(s.history), [])

    def test_a_lost_write_is_found(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.read("k", None, 2, 3)
        self.assertEqual(len(check(s.history)), 1)
        self.assertIn("lost write", check(s.history)[0])

    def test_a_stale_read_is_found(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.write("k", "b", 2, 3)
        s.read("k", "a", 4, 5)
        self.assertIn("stale read", check(s.history)[0])

    def test_a_resurrected_delete_is_found(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.write("k", None, 2, 3)
        s.read("k", "a", 4, 5)
        self.assertIn("stale read", check(s.history)[0])

    def test_phantoms_and_reads_from_the_future_are_found(self):
        s = Script()
        s.read("k", "never-written", 0, 1)
        s.read("k", "later", 2, 3)
        s.write("k", "later", 4, 5)
        problems = check(s.history)
        self.assertEqual(len(problems), 2)
        self.assertIn("no write put", problems[0])
        self.assertIn("before it was written", problems[1])

    def test_concurrent_writes_may_be_seen_in_either_order(self):
        s = Script()
        s.write("k", "a", 0, 3)
        s.write("k", "b", 1, 2)
        s.read("k", "a", 4, 5)
        s.read("k", "b", 6, 7)
        self.assertEqual(check(s.history), [])

    def test_a_failed_write_may_or_may_not_have_happened(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.write("k", "b", 2)  # no answer
        s.read("k", "b", 3, 4)
        s.read("k", "a", 5, 6)
        self.assertEqual(check(s.history), [])

    def test_a_failed_delete_explains_a_missing_object(self):
        s = Script()
        s.write("k", "a", 0, 1)
        s.write("k", None, 2)  # no answer
        s.read("k", None, 3, 4)
        self.assertEqual(check(s.history), [])

    def test_keys_are_independent(self):
        s = Script()
        s.write("k1", "a", 0, 1)
        s.read("k2", None, 2, 3)
        self.assertEqual(check(s.history), [])


class HistoryLoad:
    """Concurrent writers, deleters and readers of a few keys, recorded in
    a History: each worker sends each operation through one of its clients
    (a client per node), chosen at random."""

    keys = [f"key-{i}" for i in range(12)]
    workers = 4
    ops_per_phase = 60  # per worker, between kills
    bucket = "history"

    def __init__(self):
        self.history = History()
        self.counter = 0
        self.counter_lock = threading.Lock()

    def unique(self):
        with self.counter_lock:
            self.counter += 1
            return f"v{self.counter}"

    def worker(self, clients, seed, ops):
        rng = random.Random(seed)
        for _ in range(ops):
            client = rng.choice(clients)
            key = rng.choice(self.keys)
            roll = rng.random()
            if roll < 0.45:
                value = self.unique()
                op = self.history.invoke("write", key, value)
                call = lambda: client.put_object(Bucket=self.bucket, Key=key,  # noqa: E731
                                                 Body=value.encode())
            elif roll < 0.55:
                op = self.history.invoke("write", key, None)
                call = lambda: client.delete_object(Bucket=self.bucket, Key=key)  # noqa: E731
            else:
                op = self.history.invoke("read", key)
                call = None
            try:
                if call is None:
                    self.history.complete(op, self.get(client, key))
                else:
                    call()
                    self.history.complete(op)
            except (BotoCoreError, ClientError, OSError):
                self.history.fail(op)

    def get(self, client, key):
        """The value of ``key`` through ``client`` (None: no such key)."""
        try:
            return client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()
        except ClientError as e:
            if e.response["Error"]["Code"] != "NoSuchKey":
                raise
            return None

    def phase(self, nodes, seed):
        """Start the workers, each with a client of every one of ``nodes``;
        returns their threads."""
        # Clients are made here, one by one: making boto3 clients from
        # several threads at once is not safe.
        clients = [[node.client(connect_timeout=2, read_timeout=10) for node in nodes]
                   for _ in range(self.workers)]
        workers = [threading.Thread(target=self.worker,
                                    args=(mine, seed * 100 + i, self.ops_per_phase))
                   for i, mine in enumerate(clients)]
        for w in workers:
            w.start()
        return workers

    def run_with_kills(self, nodes, victims, restarted):
        """A phase per victim, each killed (SIGKILL) a second in, with
        requests in flight, then restarted (``restarted(victim)`` waits
        until it serves again); a last phase without a kill; then one read
        of every key through every node."""
        for round_, victim in enumerate(victims):
            workers = self.phase(nodes, round_)
            time.sleep(1.0)
            victim.kill(signal.SIGKILL)
            for w in workers:
                w.join()
            victim.start()
            restarted(victim)
        for w in self.phase(nodes, len(victims)):
            w.join()
        for node in nodes:
            client = node.client()
            for key in self.keys:
                op = self.history.invoke("read", key)
                self.history.complete(op, self.get(client, key))

    def verdict(self, testcase):
        acknowledged = sum(1 for op in self.history.ops if op.ok and op.kind == "write")
        testcase.assertGreater(acknowledged, 0)
        testcase.assertEqual(check(self.history), [])


class KilledNodeHistoryTests(TestCase):
    """A node under concurrent writers, deleters and readers, SIGKILLed and
    restarted on the same data twice: the history holds no lost write, no
    stale read and nothing deleted coming back."""

    timeout = 300

    def setUp(self):
        self.node = NodeProcess(self).start()
        self.node.client().create_bucket(Bucket=HistoryLoad.bucket)

    def test_no_acknowledged_write_lost_nothing_deleted_back(self):
        load = HistoryLoad()
        d = threads.deferToThread(load.run_with_kills, [self.node], [self.node, self.node],
                                  lambda node: None)
        return d.addCallback(lambda _: load.verdict(self))


class ClusterHistoryTests(TestCase):
    """Three nodes under concurrent clients that send each operation
    through any node; one node SIGKILLed and restarted, then another: no
    acknowledged write lost, no stale read on any node, nothing deleted
    back (W=2 and R=2 of three owners)."""

    timeout = 600

    def setUp(self):
        self.nodes = start_cluster(self, 3)

    @defer.inlineCallbacks
    def test_no_acknowledged_write_lost_nothing_deleted_back(self):
        yield cluster_with_bucket(self, self.nodes, bucket=HistoryLoad.bucket)
        load = HistoryLoad()

        def restarted(victim):
            deadline = time.monotonic() + 120
            while True:
                try:
                    all_alive(self.nodes)()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield threads.deferToThread(load.run_with_kills, self.nodes, self.nodes[1:],
                                    restarted)
        load.verdict(self)
