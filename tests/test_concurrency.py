"""Many clients writing, overwriting, listing and deleting the same keys at
once, against a real node: no torn object, no listing that shows a key
after its DELETE returned, no lost acknowledged write."""

import hashlib
import random
import threading

from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess

SHARED = [f"shared/{i}" for i in range(4)]


def body_for(key, writer, seq, rng):
    """A body whose every segment names its writer: a torn mix of two
    writes is detectable. Sizes straddle the 4 KiB inline limit and the
    4 MiB chunk size."""
    segment = f"<{key}|{writer}|{seq}>".encode()
    size = rng.choice([len(segment), 4000, 5000, 70_000, 4 * 1024 * 1024 + 10])
    return (segment * (size // len(segment) + 1))[:size]


def well_formed(body):
    end = body.find(b">") + 1
    if end == 0:
        return False
    segment = body[:end]
    return (segment * (len(body) // len(segment) + 1))[:len(body)] == body


class ConcurrencyTests(TestCase):
    def test_racing_clients(self):
        node = NodeProcess(self).start()
        node.client().create_bucket(Bucket="race")
        problems = []
        acknowledged = {}
        lock = threading.Lock()

        def recorded(work):
            # A client thread that dies must fail the test, not end quietly.
            def run(*args):
                try:
                    work(*args)
                except Exception as e:
                    problems.append(f"{work.__name__}{args}: {e!r}")
            return run

        @recorded
        def mixed(writer):
            rng = random.Random(writer)
            s3 = node.client()
            for seq in range(40):
                key = rng.choice(SHARED)
                op = rng.random()
                try:
                    if op < 0.45:
                        s3.put_object(Bucket="race", Key=key, Body=body_for(key, writer, seq, rng))
                    elif op < 0.85:
                        got = s3.get_object(Bucket="race", Key=key)
                        data = got["Body"].read()
                        if not well_formed(data):
                            problems.append(f"torn body for {key}")
                        elif got["ETag"].strip('"') != hashlib.md5(data).hexdigest():
                            problems.append(f"ETag of {key} does not match its body")
                    else:
                        s3.delete_object(Bucket="race", Key=key)
                except ClientError as e:
                    if e.response["Error"]["Code"] != "NoSuchKey":
                        problems.append(f"{key}: {e}")
                own = f"own/{writer}/{seq % 5}"
                data = body_for(own, writer, seq, rng)
                s3.put_object(Bucket="race", Key=own, Body=data)
                with lock:
                    acknowledged[own] = data

        @recorded
        def deleter():
            s3 = node.client()
            for i in range(30):
                key = f"gone/{i}"
                s3.put_object(Bucket="race", Key=key, Body=b"x")
                s3.delete_object(Bucket="race", Key=key)
                listed = [o["Key"] for o in s3.list_objects_v2(
                    Bucket="race", Prefix="gone/").get("Contents", [])]
                if key in listed:
                    problems.append(f"{key} listed after its DELETE returned")

        threads = [threading.Thread(target=mixed, args=(n,)) for n in range(6)]
        threads.append(threading.Thread(target=deleter))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        self.assertEqual(problems, [])
        s3 = node.client()
        for key, data in acknowledged.items():
            self.assertEqual(s3.get_object(Bucket="race", Key=key)["Body"].read(), data, key)
        listed = {o["Key"] for o in s3.list_objects_v2(Bucket="race").get("Contents", [])}
        self.assertLessEqual(set(acknowledged), listed)
        self.assertEqual({k for k in listed if k.startswith("gone/")}, set())
