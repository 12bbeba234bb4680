"""A real node serving objects whose chunk files were damaged on disk,
through boto3: an S3 error where one can still be sent, and a log line
naming the object, the version and the chunk every time."""

import os

import blake3
from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.damage import flip_a_byte
from tests.nodeprocess import NodeProcess

CHUNK = 4 * 1024 * 1024


def chunk_path(node, data):
    name = blake3.blake3(data).hexdigest()
    return os.path.join(node.data_dir, "chunks", name[0:2], name[2:4], name)


class DamagedChunkTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")

    def test_a_damaged_first_chunk_is_a_500_internal_error(self):
        data = os.urandom(CHUNK + 100)
        self.s3.put_object(Bucket="bkt", Key="damaged", Body=data)
        flip_a_byte(chunk_path(self.node, data[:CHUNK]))
        with self.assertRaises(ClientError) as raised:
            self.s3.get_object(Bucket="bkt", Key="damaged")["Body"].read()
        error = raised.exception.response
        self.assertEqual(error["ResponseMetadata"]["HTTPStatusCode"], 500)
        self.assertEqual(error["Error"]["Code"], "InternalError")
        # A range starting in the intact second chunk is still served.
        got = self.s3.get_object(Bucket="bkt", Key="damaged", Range=f"bytes={CHUNK}-")
        self.assertEqual(got["Body"].read(), data[CHUNK:])
        # The node keeps serving.
        self.s3.put_object(Bucket="bkt", Key="other", Body=b"fine")
        self.assertEqual(self.s3.get_object(Bucket="bkt", Key="other")["Body"].read(), b"fine")
        self.node.stop()
        self.assertIn(f"unreadable chunk {blake3.blake3(data[:CHUNK]).hexdigest()} of "
                      f"bkt/damaged version null: ChunkCorrupted", self.node.log())

    def test_a_damaged_later_chunk_ends_the_body_early_and_is_logged(self):
        """Once the status line is out, the only honest signal left is a
        body shorter than its Content-Length."""
        self.s3.put_bucket_versioning(Bucket="bkt",
                                      VersioningConfiguration={"Status": "Enabled"})
        data = os.urandom(CHUNK + 100)
        version = self.s3.put_object(Bucket="bkt", Key="late", Body=data)["VersionId"]
        flip_a_byte(chunk_path(self.node, data[CHUNK:]))
        body = self.s3.get_object(Bucket="bkt", Key="late")["Body"]
        with self.assertRaises(Exception):
            body.read()
        self.node.stop()
        self.assertIn(f"unreadable chunk {blake3.blake3(data[CHUNK:]).hexdigest()} of "
                      f"bkt/late version {version}: ChunkCorrupted", self.node.log())
