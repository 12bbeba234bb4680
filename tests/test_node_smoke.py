"""A real node answers real clients: the shortest end-to-end check."""

from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess


class NodeSmokeTests(TestCase):
    def test_put_get_list_delete_with_boto3(self):
        node = NodeProcess(self).start()
        s3 = node.client()
        s3.create_bucket(Bucket="smoke")
        s3.put_object(Bucket="smoke", Key="dir/hello.txt", Body=b"hello",
                      ContentType="text/plain", Metadata={"colour": "blue"})
        got = s3.get_object(Bucket="smoke", Key="dir/hello.txt")
        self.assertEqual(got["Body"].read(), b"hello")
        self.assertEqual(got["ContentType"], "text/plain")
        self.assertEqual(got["Metadata"], {"colour": "blue"})
        self.assertEqual(got["ETag"], '"5d41402abc4b2a76b9719d911017c592"')
        listing = s3.list_objects_v2(Bucket="smoke", Delimiter="/")
        self.assertEqual(listing["CommonPrefixes"], [{"Prefix": "dir/"}])
        s3.delete_object(Bucket="smoke", Key="dir/hello.txt")
        self.assertEqual(s3.list_objects_v2(Bucket="smoke")["KeyCount"], 0)
        s3.delete_bucket(Bucket="smoke")
        self.assertEqual(s3.list_buckets()["Buckets"], [])
