"""Crash safety and memory, against real processes: SIGKILL during a PUT
leaves the old object or the new one, never a torn one; a PUT that was
acknowledged survives SIGKILL; a 1 GiB object goes up and comes down with
the server's memory flat."""

import hashlib
import http.client
import os
import random
import threading
import time
import urllib.parse

import psutil
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess

MiB = 1024 * 1024


def pattern(seed, size):
    """``size`` reproducible bytes, different for each seed."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    return (block * (size // MiB + 1))[:size]


def stream_put(url, data, piece, on_sent=None):
    """PUT data to a presigned URL in pieces; returns the status or None if
    the connection broke (the server died)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("PUT", parts.path + "?" + parts.query, skip_accept_encoding=True)
        connection.putheader("Content-Length", str(len(data)))
        connection.endheaders()
        sent = 0
        view = memoryview(data)
        while sent < len(data):
            connection.send(view[sent:sent + piece])
            sent += min(piece, len(data) - sent)
            if on_sent is not None:
                on_sent(sent)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class CrashDuringPutTests(TestCase):
    # The nodes' environment (a subclass sets Z4_ENCRYPTION_KEY).
    env = {}

    def test_sigkill_at_any_point_of_a_put_leaves_old_or_new(self):
        data_dir = self.mktemp()
        node = NodeProcess(self, data_dir=data_dir, env=self.env).start()
        s3 = node.client()
        s3.create_bucket(Bucket="crash")
        old = pattern("old", 9 * MiB + 7)
        s3.put_object(Bucket="crash", Key="obj", Body=old)
        rng = random.Random(4)
        size = 24 * MiB + 3
        outcomes = set()
        for attempt in range(6):
            new = pattern(f"new{attempt}", size)
            url = node.client().generate_presigned_url(
                "put_object", Params={"Bucket": "crash", "Key": "obj"})
            kill_after = rng.choice([1, 5 * MiB, 12 * MiB, size - 1, size])

            def maybe_kill(sent, kill_after=kill_after):
                if sent >= kill_after:
                    node.kill()

            if kill_after == size:
                # Kill just after the body is sent, racing the commit.
                status = stream_put(url, new, MiB, on_sent=None)
                node.kill()
            else:
                status = stream_put(url, new, 256 * 1024, on_sent=maybe_kill)
            node = NodeProcess(self, data_dir=data_dir, port=node.port, env=self.env).start()
            s3 = node.client()
            stored = s3.get_object(Bucket="crash", Key="obj")["Body"].read()
            if status == 200:
                self.assertEqual(stored, new, "an acknowledged PUT was lost")
            self.assertIn(stored, (old, new), f"torn object after kill at {kill_after}")
            outcomes.add("new" if stored == new else "old")
            old = stored
        self.assertIn("old", outcomes, "no kill landed before the commit")

    def test_acknowledged_writes_survive_sigkill(self):
        data_dir = self.mktemp()
        node = NodeProcess(self, data_dir=data_dir, env=self.env).start()
        s3 = node.client()
        s3.create_bucket(Bucket="acked")
        written = {}
        stop = threading.Event()

        def writer(n):
            client = node.client()
            i = 0
            while not stop.is_set():
                key = f"w{n}/{i}"
                body = pattern(key, 100 + i % 5000)
                try:
                    client.put_object(Bucket="acked", Key=key, Body=body)
                except Exception:
                    return
                written[key] = body
                i += 1

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        node.kill()
        stop.set()
        for thread in threads:
            thread.join(30)
        self.assertGreater(len(written), 20)
        node = NodeProcess(self, data_dir=data_dir, port=node.port, env=self.env).start()
        s3 = node.client()
        for key, body in written.items():
            self.assertEqual(s3.get_object(Bucket="acked", Key=key)["Body"].read(), body, key)


class PeakRss:
    """Samples a process's resident memory in the background."""

    def __init__(self, pid, interval=0.02):
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self._interval)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


class MemoryTests(TestCase):
    # The bound: "well under 150 MiB RSS" for a 1 GiB round trip.
    rss_limit = 150 * MiB
    env = {}

    def test_one_gib_round_trip_keeps_memory_flat(self):
        node = NodeProcess(self, env=self.env).start()
        s3 = node.client()
        s3.create_bucket(Bucket="mem")
        size = 1024 * MiB
        source = os.path.abspath(self.mktemp())
        digest = hashlib.md5()
        with open(source, "wb") as f:
            for i in range(size // (64 * MiB)):
                block = pattern(i, 64 * MiB)
                digest.update(block)
                f.write(block)
        self.addCleanup(os.unlink, source)
        baseline = psutil.Process(node.process.pid).memory_info().rss
        sampler = PeakRss(node.process.pid)
        # One PUT of the whole GiB: the server must stream it, not hold it.
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "mem", "Key": "gib"})
        with open(source, "rb") as f:
            parts = urllib.parse.urlsplit(url)
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            connection.request("PUT", parts.path + "?" + parts.query, body=f,
                               headers={"Content-Length": str(size)})
            response = connection.getresponse()
            response.read()
            connection.close()
        self.assertEqual(response.status, 200)
        down = hashlib.md5()
        received = 0
        body = s3.get_object(Bucket="mem", Key="gib")["Body"]
        for piece in iter(lambda: body.read(4 * MiB), b""):
            down.update(piece)
            received += len(piece)
        peak = sampler.stop()
        self.assertEqual(received, size)
        self.assertEqual(down.hexdigest(), digest.hexdigest())
        print(f"\n1 GiB round trip: baseline RSS {baseline / MiB:.1f} MiB, "
              f"peak {peak / MiB:.1f} MiB")
        self.assertLess(peak, self.rss_limit)
