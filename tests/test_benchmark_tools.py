"""The benchmark's own helpers (benchmarks/): its fast SigV4 presigner and
the percentile arithmetic its report rests on."""

from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from twisted.trial import unittest

from benchmarks.loadgen import percentile
from benchmarks.presign import Presigner
from tests.signing import ACCESS_KEY, NOW, SECRET_KEY, SECRETS, SIGNED_AT, pin_clocks, \
    view_from_url
from z4node.s3.auth import authenticate

ENDPOINT = "http://127.0.0.1:9670"

# (boto3 operation, params, method, path, extra query)
REQUESTS = [
    ("put_object", {"Bucket": "bench", "Key": "small1/0000001"}, "PUT",
     "/bench/small1/0000001", None),
    ("get_object", {"Bucket": "bench", "Key": "small1/0000001"}, "GET",
     "/bench/small1/0000001", None),
    ("head_object", {"Bucket": "bench", "Key": "small1/0000001"}, "HEAD",
     "/bench/small1/0000001", None),
    ("delete_object", {"Bucket": "bench", "Key": "small1/0000001"}, "DELETE",
     "/bench/small1/0000001", None),
    ("list_objects_v2", {"Bucket": "bench", "Prefix": "list/", "MaxKeys": 1000}, "GET",
     "/bench", {"list-type": "2", "prefix": "list/", "max-keys": "1000", "encoding-type": "url"}),
]


class PresignerTests(unittest.TestCase):
    def presigner(self):
        return Presigner("127.0.0.1:9670", ACCESS_KEY, SECRET_KEY,
                         now=SIGNED_AT.replace(tzinfo=__import__("datetime").timezone.utc))

    def assertSameURL(self, ours, botos):
        a, b = urlsplit(ours), urlsplit(botos)
        self.assertEqual(a.path, b.path)
        self.assertEqual(sorted(parse_qsl(a.query)), sorted(parse_qsl(b.query)))

    def check_against_botocore(self, crt):
        pin_clocks(self, crt=crt)
        client = boto3.client(
            "s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        presigner = self.presigner()
        for operation, params, method, path, query in REQUESTS:
            botos = client.generate_presigned_url(operation, Params=params, ExpiresIn=3600)
            self.assertSameURL(ENDPOINT + presigner.path(method, path, query), botos)

    def test_same_as_botocore(self):
        """The URLs are botocore's presigned URLs for the same instant."""
        self.check_against_botocore(crt=False)

    def test_same_as_botocore_crt(self):
        self.check_against_botocore(crt=True)

    def test_z4node_accepts_them(self):
        presigner = self.presigner()
        for _, _, method, path, query in REQUESTS:
            view = view_from_url(method, ENDPOINT + presigner.path(method, path, query))
            credentials = authenticate(view, SECRETS.get, NOW + 60)
            self.assertEqual(credentials.access_key_id, ACCESS_KEY)

    def test_refuses_paths_that_need_encoding(self):
        with self.assertRaises(ValueError):
            self.presigner().path("GET", "/bench/with space")


class PercentileTests(unittest.TestCase):
    def test_percentiles_of_a_histogram(self):
        # 98 requests at 100 µs, one at 5 ms, one at 40 ms.
        histogram = [[100, 98], [5000, 1], [40000, 1]]
        self.assertEqual(percentile(histogram, 50), 100)
        self.assertEqual(percentile(histogram, 98), 100)
        self.assertEqual(percentile(histogram, 99), 5000)
        self.assertEqual(percentile(histogram, 100), 40000)
