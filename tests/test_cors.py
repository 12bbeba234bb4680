"""CORS: bucket CORS configuration through boto3 and the aws CLI, unsigned
preflights as a browser sends them, and CORS headers on actual responses
(the rule matching itself is tested without a node)."""

import json
import urllib.error
import urllib.request

from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess
from z4node.s3 import cors
from z4node.s3.errors import S3Error
from z4node.storage.meta import Bucket

RULES = [
    {"ID": "app", "AllowedOrigins": ["https://app.example.com", "https://*.example.org"],
     "AllowedMethods": ["GET", "PUT", "POST"], "AllowedHeaders": ["x-amz-*", "content-type"],
     "ExposeHeaders": ["ETag", "x-amz-version-id"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]


def stored(rules):
    return Bucket("b", "o", 0, 0, {"cors": [
        {"allowed_origins": r["AllowedOrigins"], "allowed_methods": r["AllowedMethods"],
         "allowed_headers": r.get("AllowedHeaders", []),
         "expose_headers": r.get("ExposeHeaders", []), "max_age": r.get("MaxAgeSeconds")}
        for r in rules]})


class MatchingTests(TestCase):
    def preflight(self, origin, method, headers=None):
        request = {"origin": origin, "access-control-request-method": method}
        if headers:
            request["access-control-request-headers"] = headers
        return cors.preflight(stored(RULES), request)

    def test_first_matching_rule_answers(self):
        answer = self.preflight("https://app.example.com", "PUT",
                                "Content-Type, X-Amz-Meta-Colour")
        self.assertEqual(answer["access-control-allow-origin"], "https://app.example.com")
        self.assertEqual(answer["access-control-allow-methods"], "GET, PUT, POST")
        self.assertEqual(answer["access-control-allow-headers"],
                         "content-type, x-amz-meta-colour")
        self.assertEqual(answer["access-control-max-age"], "600")
        self.assertEqual(answer["access-control-expose-headers"], "ETag, x-amz-version-id")
        self.assertEqual(answer["access-control-allow-credentials"], "true")
        wildcard = self.preflight("https://eu.example.org", "POST")
        self.assertEqual(wildcard["access-control-allow-origin"], "https://eu.example.org")
        anyone = self.preflight("https://elsewhere.test", "GET")
        self.assertEqual(anyone["access-control-allow-origin"], "*")
        self.assertNotIn("access-control-allow-credentials", anyone)

    def test_refusals(self):
        for origin, method, headers in (
                ("https://elsewhere.test", "PUT", None),
                ("https://app.example.com", "DELETE", None),
                ("https://app.example.com", "PUT", "authorization-x"),
                ("https://example.org", "POST", None),
                ("http://app.example.com", "PUT", None)):
            with self.assertRaises(S3Error) as raised:
                self.preflight(origin, method, headers)
            self.assertEqual((raised.exception.status, raised.exception.code),
                             (403, "AccessForbidden"), (origin, method, headers))
        with self.assertRaises(S3Error) as raised:
            cors.preflight(stored(RULES), {"access-control-request-method": "GET"})
        self.assertEqual(raised.exception.status, 400)
        with self.assertRaises(S3Error) as raised:
            cors.preflight(Bucket("b", "o", 0, 0, {}), {
                "origin": "https://x", "access-control-request-method": "GET"})
        self.assertEqual(raised.exception.status, 403)


class CorsProcessTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="web")

    def options(self, path, origin, method, headers=None):
        request = urllib.request.Request(self.node.endpoint + path, method="OPTIONS")
        if origin:
            request.add_header("Origin", origin)
        request.add_header("Access-Control-Request-Method", method)
        if headers:
            request.add_header("Access-Control-Request-Headers", headers)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    def test_configuration_round_trip_and_errors(self):
        s3 = self.s3
        with self.assertRaises(ClientError) as raised:
            s3.get_bucket_cors(Bucket="web")
        self.assertEqual(raised.exception.response["Error"]["Code"], "NoSuchCORSConfiguration")
        s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
        self.assertEqual(s3.get_bucket_cors(Bucket="web")["CORSRules"], RULES)
        for bad in ({"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
                    {"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]},
                    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"],
                     "ExposeHeaders": ["*"]}):
            with self.assertRaises(ClientError) as raised:
                s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [bad]})
            self.assertEqual(raised.exception.response["Error"]["Code"], "InvalidRequest", bad)
        s3.delete_bucket_cors(Bucket="web")
        with self.assertRaises(ClientError):
            s3.get_bucket_cors(Bucket="web")

    def test_preflight_is_answered_unsigned(self):
        self.assertEqual(self.options("/web/k", "https://app.example.com", "PUT")[0], 403)
        self.s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
        status, headers = self.options("/web/photos/cat.jpg", "https://app.example.com", "PUT",
                                       "content-type,x-amz-date")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Access-Control-Allow-Origin"], "https://app.example.com")
        self.assertEqual(headers["Access-Control-Allow-Headers"], "content-type, x-amz-date")
        self.assertEqual(headers["Access-Control-Max-Age"], "600")
        self.assertEqual(self.options("/web", "https://evil.test", "PUT")[0], 403)
        self.assertEqual(self.options("/web", None, "GET")[0], 400)
        self.assertEqual(self.options("/nobucket/k", "https://app.example.com", "GET")[0], 403)

    def test_actual_responses_carry_cors_headers(self):
        s3 = self.s3
        s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
        s3.put_object(Bucket="web", Key="page.html", Body=b"<p>hi</p>")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "web",
                                                              "Key": "page.html"})
        request = urllib.request.Request(url, headers={"Origin": "https://app.example.com"})
        with urllib.request.urlopen(request) as response:
            self.assertEqual(response.read(), b"<p>hi</p>")
            self.assertEqual(response.headers["Access-Control-Allow-Origin"],
                             "https://app.example.com")
            self.assertEqual(response.headers["Access-Control-Expose-Headers"],
                             "ETag, x-amz-version-id")
        with urllib.request.urlopen(urllib.request.Request(url)) as response:
            self.assertIsNone(response.headers["Access-Control-Allow-Origin"])
        # An error answer carries them too, so the page can read the error.
        missing = s3.generate_presigned_url("get_object", Params={"Bucket": "web",
                                                                  "Key": "missing"})
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(urllib.request.Request(
                missing, headers={"Origin": "https://other.test"}))
        self.assertEqual(raised.exception.code, 404)
        self.assertEqual(raised.exception.headers["Access-Control-Allow-Origin"], "*")

    def test_aws_cli(self):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"CORSRules": [{"AllowedOrigins": ["https://app.example.com"],
                                      "AllowedMethods": ["GET", "POST"]}]}, f)
        self.node.aws("s3api", "put-bucket-cors", "--bucket", "web", "--cors-configuration",
                      f"file://{path}")
        got = json.loads(self.node.aws("s3api", "get-bucket-cors", "--bucket", "web").stdout)
        self.assertEqual(got["CORSRules"][0]["AllowedMethods"], ["GET", "POST"])
