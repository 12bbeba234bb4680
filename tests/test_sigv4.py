"""Tests for SigV4 verification through z4node.s3.auth.authenticate: AWS's
published examples, requests signed by botocore and by awscrt (the signer
of aws CLI v2 and the CRT-based SDKs), and requests that must fail with
AWS's error code."""

import calendar
import datetime
import hashlib
from urllib.parse import quote, quote_from_bytes

from awscrt import auth as crt_auth
from awscrt.http import HttpHeaders, HttpRequest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from z4node.s3 import sigv4
from z4node.s3.auth import RequestView, authenticate
from z4node.s3.errors import S3Error

from tests.signing import (ACCESS_KEY, AWKWARD_KEYS, AWS_SECRETS, NOW, SECRET_KEY, SECRETS,
                           SIGNED_AT, CapturingClient, FailureAssertions, pin_clocks, replace,
                           view_from_url, with_headers)

EMPTY = hashlib.sha256(b"").hexdigest()
# All of AWS's SigV4 examples are signed at 20130524T000000Z.
AWS_NOW = float(calendar.timegm((2013, 5, 24, 0, 0, 0)))
AWS_CREDENTIAL = "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def aws_header(signed_headers, signature):
    return f"AWS4-HMAC-SHA256 {AWS_CREDENTIAL},SignedHeaders={signed_headers},Signature={signature}"


class AwsExampleTests(FailureAssertions, SynchronousTestCase):
    """AWS S3 API reference, "Signature Calculations for the Authorization
    Header: Transferring Payload in a Single Chunk", and "Authenticating
    Requests: Using Query Parameters"."""

    def authenticate(self, view, now=AWS_NOW):
        return authenticate(view, AWS_SECRETS.get, now)

    def get_object(self):
        return RequestView("GET", b"/test.txt", b"", {
            "host": "examplebucket.s3.amazonaws.com",
            "range": "bytes=0-9",
            "x-amz-content-sha256": EMPTY,
            "x-amz-date": "20130524T000000Z",
            "authorization": aws_header(
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        })

    def test_get_object(self):
        credentials = self.authenticate(self.get_object())
        self.assertEqual(credentials.access_key_id, "AKIAIOSFODNN7EXAMPLE")
        self.assertEqual(credentials.signature_version, 4)
        self.assertEqual(credentials.payload_hash, EMPTY)
        self.assertFalse(credentials.presigned)
        self.assertIsNone(credentials.chunk_signer)

    def test_get_object_other_range_fails(self):
        view = with_headers(self.get_object(), range="bytes=0-10")
        self.assertFails("SignatureDoesNotMatch", view, AWS_SECRETS, AWS_NOW)

    def test_put_object(self):
        payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
        # The key "test$file.text" is sent with a raw "$", and signed as %24.
        view = RequestView("PUT", b"/test$file.text", b"", {
            "host": "examplebucket.s3.amazonaws.com",
            "date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-date": "20130524T000000Z",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": payload,
            "authorization": aws_header(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
        })
        self.assertEqual(self.authenticate(view).payload_hash, payload)
        self.assertEqual(self.authenticate(replace(view, raw_path=b"/test%24file.text")).payload_hash,
                         payload)
        self.assertFails("SignatureDoesNotMatch",
                         with_headers(view, x_amz_storage_class="STANDARD"), AWS_SECRETS, AWS_NOW)

    def test_get_bucket_lifecycle(self):
        view = RequestView("GET", b"/", b"lifecycle", {
            "host": "examplebucket.s3.amazonaws.com",
            "x-amz-date": "20130524T000000Z",
            "x-amz-content-sha256": EMPTY,
            "authorization": aws_header(
                "host;x-amz-content-sha256;x-amz-date",
                "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        })
        self.assertEqual(self.authenticate(view).access_key_id, "AKIAIOSFODNN7EXAMPLE")
        # "lifecycle=" is the same canonical query as "lifecycle".
        self.authenticate(replace(view, raw_query=b"lifecycle="))
        self.assertFails("SignatureDoesNotMatch", replace(view, raw_query=b"policy"),
                         AWS_SECRETS, AWS_NOW)

    def test_list_objects(self):
        view = RequestView("GET", b"/", b"max-keys=2&prefix=J", {
            "host": "examplebucket.s3.amazonaws.com",
            "x-amz-date": "20130524T000000Z",
            "x-amz-content-sha256": EMPTY,
            "authorization": aws_header(
                "host;x-amz-content-sha256;x-amz-date",
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        })
        self.authenticate(view)
        # Parameter order does not matter; the canonical query is sorted.
        self.authenticate(replace(view, raw_query=b"prefix=J&max-keys=2"))
        self.assertFails("SignatureDoesNotMatch", replace(view, raw_query=b"max-keys=3&prefix=J"),
                         AWS_SECRETS, AWS_NOW)

    def presigned(self):
        query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                 "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        return RequestView("GET", b"/test.txt", query.encode(),
                           {"host": "examplebucket.s3.amazonaws.com"})

    def test_presigned_url(self):
        credentials = self.authenticate(self.presigned(), now=AWS_NOW + 3600)
        self.assertEqual(credentials.access_key_id, "AKIAIOSFODNN7EXAMPLE")
        self.assertTrue(credentials.presigned)
        self.assertEqual(credentials.payload_hash, "UNSIGNED-PAYLOAD")
        self.assertIsNone(credentials.chunk_signer)

    def test_presigned_url_lasts_its_86400_seconds(self):
        self.authenticate(self.presigned(), now=AWS_NOW + 86400)
        error = self.assertFails("AccessDenied", self.presigned(), AWS_SECRETS, AWS_NOW + 86401)
        self.assertEqual(error.message, "Request has expired")
        self.assertEqual(error.extra["Expires"], "2013-05-25T00:00:00Z")

    def test_presigned_url_other_object_fails(self):
        self.assertFails("SignatureDoesNotMatch", replace(self.presigned(), raw_path=b"/test.tx"),
                         AWS_SECRETS, AWS_NOW)

    def test_skewed_example_is_refused(self):
        self.authenticate(self.get_object(), now=AWS_NOW + 900)
        self.authenticate(self.get_object(), now=AWS_NOW - 900)
        for now in (AWS_NOW + 901, AWS_NOW - 901):
            error = self.assertFails("RequestTimeTooSkewed", self.get_object(), AWS_SECRETS, now)
            self.assertEqual(error.status, 403)


class BotocoreHeaderTests(FailureAssertions, SynchronousTestCase):
    """Requests signed by botocore's S3SigV4Auth, as boto3 sends them."""

    crt = False

    def setUp(self):
        pin_clocks(self, crt=self.crt)
        self.client = CapturingClient()

    def assertVerifies(self, view, payload=None):
        credentials = authenticate(view, SECRETS.get, NOW)
        self.assertEqual(credentials.access_key_id, ACCESS_KEY)
        self.assertEqual(credentials.signature_version, 4)
        if payload is not None:
            self.assertEqual(credentials.payload_hash, hashlib.sha256(payload).hexdigest())
        return credentials

    def put(self, key="some/key.txt", body=b"payload", **params):
        view, _ = self.client.call("put_object", Bucket="bucket", Key=key, Body=body, **params)
        return view

    def test_put_awkward_keys(self):
        for key in AWKWARD_KEYS:
            view = self.put(key, body=key.encode())
            self.assertEqual(view.raw_path, b"/bucket/" + quote(key, safe="/~").encode())
            self.assertVerifies(view, payload=key.encode())

    def test_get_awkward_keys_with_overrides(self):
        for key in AWKWARD_KEYS:
            view, _ = self.client.call(
                "get_object", Bucket="bucket", Key=key, Range="bytes=0-9", VersionId="v1+/=",
                ResponseContentDisposition='attachment; filename="naïve file.txt"',
                ResponseContentType="text/plain; charset=utf-8", IfMatch='"etag"')
            self.assertIn(b"response-content-disposition=", view.raw_query)
            self.assertVerifies(view, payload=b"")

    def test_list_with_awkward_query(self):
        for prefix in AWKWARD_KEYS:
            view, _ = self.client.call("list_objects_v2", Bucket="bucket", Prefix=prefix,
                                       Delimiter="/", StartAfter="a=b&c=d", MaxKeys=7)
            self.assertVerifies(view)

    def test_multipart(self):
        view, _ = self.client.call("create_multipart_upload", Bucket="bucket", Key="big file")
        self.assertEqual(view.raw_query, b"uploads")
        self.assertVerifies(view)
        view, _ = self.client.call("upload_part", Bucket="bucket", Key="big file",
                                   UploadId="abc/def+ghi==", PartNumber=3, Body=b"part")
        self.assertVerifies(view, payload=b"part")

    def test_metadata_and_acl_headers(self):
        view = self.put(Metadata={"colour": "blue  and   green"}, ACL="public-read",
                        ContentType="text/plain")
        self.assertEqual(view.headers["x-amz-acl"], "public-read")
        self.assertVerifies(view)

    def test_virtual_host_style(self):
        self.client = CapturingClient(addressing_style="virtual")
        view = self.put("with space.txt")
        self.assertEqual(view.headers["host"], "bucket.localhost:9670")
        self.assertEqual(view.raw_path, b"/with%20space.txt")
        self.assertVerifies(view)

    def test_unsigned_payload(self):
        self.client = CapturingClient(endpoint="https://localhost:9670", payload_signing_enabled=False)
        view, _ = self.client.call("get_object", Bucket="bucket", Key="k")
        self.assertEqual(self.assertVerifies(view).payload_hash, "UNSIGNED-PAYLOAD")

    def test_date_header_instead_of_x_amz_date(self):
        # botocore keeps a Date header, and signs with it, when the request
        # already had one.
        request = AWSRequest("GET", "http://localhost:9670/bucket/key",
                             headers={"Date": "whatever"})
        S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        view = view_from_url("GET", request.url, request.headers)
        self.assertNotIn("x-amz-date", view.headers)
        self.assertTrue(view.headers["date"].startswith("Fri, 01 Mar 2024 12:30:15"))
        self.assertVerifies(view)

    def test_tampering_fails(self):
        view = self.put(Metadata={"owner": "alice"})
        self.assertVerifies(view)
        tampered = [
            replace(view, raw_path=b"/bucket/some/key.txu"),
            replace(view, raw_path=b"/bucket/some//key.txt"),
            replace(view, raw_query=b"acl"),
            replace(view, method="POST"),
            with_headers(view, x_amz_meta_owner="mallory"),
            with_headers(view, x_amz_content_sha256=hashlib.sha256(b"other").hexdigest()),
            with_headers(view, host="elsewhere:9670"),
        ]
        for each in tampered:
            error = self.assertFails("SignatureDoesNotMatch", each)
            self.assertEqual(error.status, 403)
            self.assertIn("AWS4-HMAC-SHA256\n20240301T123015Z\n", error.extra["StringToSign"])

    def test_unsigned_amz_header_is_refused(self):
        view = with_headers(self.put(), x_amz_acl="public-read-write")
        error = self.assertFails("AccessDenied", view)
        self.assertEqual(error.extra["HeadersNotSigned"], "x-amz-acl")

    def test_wrong_secret(self):
        self.client = CapturingClient(secret="not the secret")
        self.assertFails("SignatureDoesNotMatch", self.put())

    def test_unknown_access_key(self):
        error = self.assertFails("InvalidAccessKeyId", self.put(), secrets={})
        self.assertEqual(error.status, 403)

    def test_time_skew(self):
        view = self.put()
        for now in (NOW - 14 * 60, NOW + 14 * 60):
            authenticate(view, SECRETS.get, now)
        for now in (NOW - 16 * 60, NOW + 16 * 60):
            self.assertFails("RequestTimeTooSkewed", view, now=now)

    def test_missing_content_sha256(self):
        error = self.assertFails("InvalidRequest", with_headers(self.put(), x_amz_content_sha256=None))
        self.assertIn("x-amz-content-sha256", error.message)

    def test_bad_content_sha256(self):
        for value in ("abc", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "g" * 64):
            self.assertFails("InvalidArgument", with_headers(self.put(), x_amz_content_sha256=value))

    def test_missing_or_bad_date(self):
        for headers in ({"x_amz_date": None}, {"x_amz_date": "2024-03-01T12:30:15Z"},
                        {"x_amz_date": "20241301T123015Z"}):
            error = self.assertFails("AccessDenied", with_headers(self.put(), **headers))
            self.assertIn("Date", error.message)

    def test_malformed_authorization(self):
        view = self.put()
        good = view.headers["authorization"]
        credential = f"{ACCESS_KEY}/20240301/us-east-1/s3/aws4_request"
        for authorization in [
            good.replace("Signature=", "Sig="),
            good.replace(", SignedHeaders=", ", "),
            good.replace(credential, f"{ACCESS_KEY}/20240301/us-east-1/s3"),
            good.replace(credential, f"{ACCESS_KEY}/2024031/us-east-1/s3/aws4_request"),
            good.replace(credential, f"{ACCESS_KEY}/20240301/us-east-1/ec2/aws4_request"),
            good.replace(credential, f"{ACCESS_KEY}/20240301/us-east-1/s3/aws5_request"),
            good.replace(credential, f"{ACCESS_KEY}/20240302/us-east-1/s3/aws4_request"),
            good.replace("SignedHeaders=", "SignedHeaders=;"),
            "AWS4-HMAC-SHA256",
        ]:
            self.assertFails("AuthorizationHeaderMalformed", with_headers(view, authorization=authorization))

    def test_signature_format(self):
        view = self.put()
        good = view.headers["authorization"]
        signature = good.rsplit("=", 1)[1]
        for other in (signature.upper(), signature[:-1], signature + "0", "é" * 64, ""):
            self.assertFails("SignatureDoesNotMatch",
                             with_headers(view, authorization=good.replace(signature, other)))

    def test_any_region(self):
        # A self-hosted node answers for whatever region clients were set up with.
        request = AWSRequest("GET", "http://localhost:9670/bucket/key")
        S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "z4-home-1").add_auth(request)
        self.assertVerifies(view_from_url("GET", request.url, request.headers))

    def test_client_signing_its_own_path_encoding(self):
        # Signs "/bucket/%7Etilde" as sent, not the canonical "/bucket/~tilde".
        request = AWSRequest("GET", "http://localhost:9670/bucket/%7Etilde%2a")
        S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        self.assertVerifies(view_from_url("GET", request.url, request.headers))

    def test_client_sending_an_odd_encoding_of_what_it_signed(self):
        request = AWSRequest("GET", "http://localhost:9670/bucket/~tilde%2A")
        S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        view = view_from_url("GET", request.url, request.headers)
        self.assertVerifies(replace(view, raw_path=b"/bucket/%7etilde*"))

    # Run once per signer (the CRT subclass), hence from two executors.
    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.differing_executors])
    @given(st.text(min_size=1, max_size=40).filter(lambda key: "\x00" not in key),
           st.text(max_size=20))
    def test_any_key_and_prefix(self, key, prefix):
        view, _ = self.client.call("get_object", Bucket="bucket", Key=key)
        self.assertVerifies(view)
        view, _ = self.client.call("list_objects_v2", Bucket="bucket", Prefix=prefix, StartAfter=key)
        self.assertVerifies(view)


class BotocoreCrtHeaderTests(BotocoreHeaderTests):
    """The same, signed by botocore's CrtS3SigV4Auth, which boto3 uses when
    awscrt is installed."""

    crt = True


class CrtSignerTests(SynchronousTestCase):
    """Requests signed by awscrt, the signer of aws CLI v2 and the CRT SDKs."""

    def sign(self, path, signature_type, **config):
        request = HttpRequest("GET", path, HttpHeaders([("host", "localhost:9670")]))
        config = crt_auth.AwsSigningConfig(
            algorithm=crt_auth.AwsSigningAlgorithm.V4,
            signature_type=signature_type,
            credentials_provider=crt_auth.AwsCredentialsProvider.new_static(ACCESS_KEY, SECRET_KEY),
            region="us-east-1", service="s3",
            date=SIGNED_AT.replace(tzinfo=datetime.timezone.utc),
            use_double_uri_encode=False, should_normalize_uri_path=False, **config)
        signed = crt_auth.aws_sign_request(request, config).result()
        return view_from_url("GET", "http://localhost:9670" + signed.path, list(signed.headers))

    def test_header_signature(self):
        for key in AWKWARD_KEYS:
            path = "/bucket/" + quote(key, safe="/~") + "?prefix=" + quote(key, safe="")
            view = self.sign(path, crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
                             signed_body_value=crt_auth.AwsSignedBodyValue.EMPTY_SHA256,
                             signed_body_header_type=crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256)
            credentials = authenticate(view, SECRETS.get, NOW)
            self.assertEqual((credentials.access_key_id, credentials.payload_hash), (ACCESS_KEY, EMPTY))

    def test_presigned(self):
        for key in AWKWARD_KEYS:
            view = self.sign("/bucket/" + quote(key, safe="/~"),
                             crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
                             signed_body_value=crt_auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
                             expiration_in_seconds=600)
            self.assertTrue(authenticate(view, SECRETS.get, NOW + 600).presigned)
            error = self.assertRaises(S3Error, authenticate, view, SECRETS.get, NOW + 601)
            self.assertEqual(error.code, "AccessDenied")


class PresignedTests(FailureAssertions, SynchronousTestCase):
    """URLs presigned by botocore's S3SigV4QueryAuth."""

    crt = False

    def setUp(self):
        pin_clocks(self, crt=self.crt)
        self.client = CapturingClient()

    def presign(self, key="some key+😀.txt", expires_in=3600, method="GET", operation="get_object",
                **params):
        url = self.client.presign(operation, expires_in=expires_in, Bucket="bucket", Key=key, **params)
        self.assertIn("X-Amz-Signature=", url)
        return view_from_url(method, url)

    def test_awkward_keys(self):
        for key in AWKWARD_KEYS:
            credentials = authenticate(self.presign(key), SECRETS.get, NOW + 10)
            self.assertEqual(credentials.access_key_id, ACCESS_KEY)
            self.assertTrue(credentials.presigned)
            self.assertEqual(credentials.payload_hash, "UNSIGNED-PAYLOAD")

    def test_response_overrides(self):
        view = self.presign(ResponseContentDisposition='attachment; filename="a b&c=d.txt"',
                            ResponseCacheControl="no-cache")
        authenticate(view, SECRETS.get, NOW)
        self.assertFails("SignatureDoesNotMatch",
                         replace(view, raw_query=view.raw_query.replace(b"no-cache", b"max-age%3D9")))

    def test_put_with_signed_content_type(self):
        view = self.presign(method="PUT", operation="put_object", ContentType="image/png")
        self.assertIn("content-type", view.raw_query.decode().split("X-Amz-SignedHeaders=")[1])
        authenticate(with_headers(view, content_type="image/png"), SECRETS.get, NOW)
        self.assertFails("SignatureDoesNotMatch", with_headers(view, content_type="text/html"))
        self.assertFails("SignatureDoesNotMatch", view)

    def test_expiry(self):
        view = self.presign(expires_in=60)
        authenticate(view, SECRETS.get, NOW + 60)
        error = self.assertFails("AccessDenied", view, now=NOW + 61)
        self.assertEqual(error.message, "Request has expired")
        self.assertEqual(error.extra["X-Amz-Expires"], "60")

    def test_not_yet_valid(self):
        view = self.presign()
        authenticate(view, SECRETS.get, NOW - 14 * 60)
        error = self.assertFails("AccessDenied", view, now=NOW - 16 * 60)
        self.assertEqual(error.message, "Request is not yet valid")

    def test_seven_days_at_most(self):
        view = self.presign(expires_in=604800)
        authenticate(view, SECRETS.get, NOW + 604800)
        error = self.assertFails("AuthorizationQueryParametersError", self.presign(expires_in=604801))
        self.assertIn("604800", error.message)

    def test_tampering_fails(self):
        view = self.presign()
        for tampered in [
            replace(view, raw_path=view.raw_path + b"x"),
            replace(view, method="DELETE"),
            replace(view, raw_query=view.raw_query + b"&versionId=1"),
            replace(view, raw_query=view.raw_query.replace(b"X-Amz-Expires=3600", b"X-Amz-Expires=3601")),
            with_headers(view, host="other:9670"),
        ]:
            self.assertFails("SignatureDoesNotMatch", tampered)

    def test_unsigned_amz_header_is_refused(self):
        error = self.assertFails("AccessDenied", with_headers(self.presign(), x_amz_acl="public-read"))
        self.assertEqual(error.extra["HeadersNotSigned"], "x-amz-acl")

    def test_unknown_access_key(self):
        self.assertFails("InvalidAccessKeyId", self.presign(), secrets={})

    def query_without(self, view, name):
        kept = [part for part in view.raw_query.split(b"&") if not part.startswith(name.encode() + b"=")]
        return replace(view, raw_query=b"&".join(kept))

    def test_malformed_parameters(self):
        view = self.presign()
        query = view.raw_query
        for broken in [
            self.query_without(view, "X-Amz-Date"),
            self.query_without(view, "X-Amz-Expires"),
            self.query_without(view, "X-Amz-SignedHeaders"),
            self.query_without(view, "X-Amz-Signature"),
            self.query_without(view, "X-Amz-Algorithm"),
            replace(view, raw_query=query.replace(b"AWS4-HMAC-SHA256", b"AWS4-HMAC-SHA512")),
            replace(view, raw_query=query.replace(b"X-Amz-Expires=3600", b"X-Amz-Expires=soon")),
            replace(view, raw_query=query.replace(b"X-Amz-Expires=3600", b"X-Amz-Expires=-5")),
            replace(view, raw_query=query.replace(b"X-Amz-Date=20240301T123015Z",
                                                  b"X-Amz-Date=20240301")),
            replace(view, raw_query=query.replace(b"%2Fs3%2F", b"%2Fiam%2F")),
            replace(view, raw_query=query.replace(b"%2F20240301%2F", b"%2F20240302%2F")),
            replace(view, raw_query=query + b"&X-Amz-Date=20240301T123015Z"),
        ]:
            self.assertFails("AuthorizationQueryParametersError", broken)

    def test_signed_content_sha256_parameter(self):
        # Some SDKs sign an X-Amz-Content-Sha256 parameter in presigned URLs.
        digest = hashlib.sha256(b"body").hexdigest()

        class SignedPayloadQueryAuth(S3SigV4QueryAuth):
            def payload(self, request):
                return digest

        request = AWSRequest("PUT", f"http://localhost:9670/bucket/key?X-Amz-Content-Sha256={digest}")
        SignedPayloadQueryAuth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1",
                               expires=60).add_auth(request)
        credentials = authenticate(view_from_url("PUT", request.url), SECRETS.get, NOW)
        self.assertEqual(credentials.payload_hash, digest)


class BotocoreCrtPresignedTests(PresignedTests):
    """The same, presigned by botocore's CrtS3SigV4QueryAuth."""

    crt = True


class MechanismTests(FailureAssertions, SynchronousTestCase):
    def setUp(self):
        pin_clocks(self)
        self.client = CapturingClient()

    def test_anonymous(self):
        view = RequestView("GET", b"/bucket/key", b"prefix=x&acl", {"host": "localhost"})
        self.assertIsNone(authenticate(view, SECRETS.get, NOW))

    def test_unsupported_authorization_types(self):
        view = RequestView("GET", b"/bucket/key", b"", {"host": "localhost"})
        for authorization in ("Bearer token", "AWS4-ECDSA-P256-SHA256 Credential=x", "", "aws4-hmac-sha256 x"):
            error = self.assertFails("InvalidArgument", with_headers(view, authorization=authorization))
            self.assertEqual(error.message, "Unsupported Authorization Type")

    def test_only_one_mechanism(self):
        signed, _ = self.client.call("get_object", Bucket="bucket", Key="key")
        presigned = view_from_url("GET", self.client.presign("get_object", Bucket="bucket", Key="key"))
        for view in (replace(signed, raw_query=presigned.raw_query),
                     replace(signed, raw_query=b"Signature=abc&AWSAccessKeyId=x&Expires=1"),
                     replace(presigned, raw_query=presigned.raw_query + b"&Signature=abc")):
            error = self.assertFails("InvalidArgument", view)
            self.assertIn("Only one auth mechanism", error.message)


class SigningKeyCacheTests(FailureAssertions, SynchronousTestCase):
    def setUp(self):
        pin_clocks(self)
        self.cache = sigv4.SigningKeyCache()
        self.patch(sigv4, "signing_keys", self.cache)
        self.view, _ = CapturingClient().call("get_object", Bucket="bucket", Key="key")

    def test_kept_only_after_a_verified_signature(self):
        self.assertFails("SignatureDoesNotMatch", self.view, secrets={ACCESS_KEY: "wrong"})
        self.assertEqual(len(self.cache), 0)
        authenticate(self.view, SECRETS.get, NOW)
        authenticate(self.view, SECRETS.get, NOW)
        self.assertEqual(len(self.cache), 1)

    def test_rotated_secret_is_not_served_from_cache(self):
        authenticate(self.view, SECRETS.get, NOW)
        self.assertFails("SignatureDoesNotMatch", self.view, secrets={ACCESS_KEY: "rotated"})

    def test_bounded(self):
        self.cache.max_entries = 2
        for region in ("a", "b", "c"):
            self.cache.keep("secret", "20240301", region, "s3", region.encode())
        self.assertEqual(len(self.cache), 2)
        self.assertEqual(self.cache.get("secret", "20240301", "c", "s3"), b"c")
        self.assertEqual(self.cache.get("secret", "20240301", "a", "s3"),
                         sigv4.derive_signing_key("secret", "20240301", "a", "s3"))


class CanonicalFormTests(SynchronousTestCase):
    def test_canonical_uri(self):
        self.assertEqual(sigv4.canonical_uri(b""), "/")
        # An encoded slash decodes to a slash: clients that sign "%2F" are
        # matched by the raw-path fallback instead.
        self.assertEqual(sigv4.canonical_uri(b"/a b/%7e/%2F/+/%zz//"), "/a%20b/~///%2B/%25zz//")
        self.assertEqual(sigv4.canonical_uri("/é😀".encode()), "/%C3%A9%F0%9F%98%80")

    def test_canonical_query(self):
        params = sigv4.parse_query(b"b=2&a=%20&a=1&c&&d=x+y&X-Amz-Signature=s")
        self.assertEqual(params, [("b", "2"), ("a", " "), ("a", "1"), ("c", None), ("d", "x+y"),
                                  ("X-Amz-Signature", "s")])
        self.assertEqual(sigv4.canonical_query(params, exclude="X-Amz-Signature"),
                         "a=%20&a=1&b=2&c=&d=x%2By")

    def test_header_values_are_trimmed_as_signed(self):
        pin_clocks(self)
        request = AWSRequest("GET", "http://localhost/b/k", headers={"x-amz-meta-a": "  a   b\t c  "})
        S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        view = view_from_url("GET", request.url, request.headers)
        self.assertEqual(view.headers["x-amz-meta-a"], "  a   b\t c  ")
        self.assertEqual(authenticate(view, SECRETS.get, NOW).access_key_id, ACCESS_KEY)
        # Non-ASCII blanks are text, not whitespace to squeeze.
        self.assertRaises(S3Error, authenticate, with_headers(view, x_amz_meta_a="a\xa0 b c"),
                          SECRETS.get, NOW)


class EncodingTests(SynchronousTestCase):
    """The query decoding and UriEncode are byte-exact: each agrees with
    percent-coding the bytes with the standard library, for any bytes."""

    @given(st.lists(st.tuples(st.binary(max_size=20), st.none() | st.binary(max_size=20)),
                    max_size=6))
    def test_parse_query_decodes_each_byte(self, pairs):
        def escape(raw):
            # Some bytes escaped, some left raw, '%' always escaped; '&' and
            # '=' must be, being separators.
            return b"".join(b"%%%02x" % b if b in b"%&=" or b % 3 == 0 else bytes([b])
                            for b in raw)
        raw_query = b"&".join(escape(name) + (b"" if value is None else b"=" + escape(value))
                              for name, value in pairs)
        expected = [(name.decode("latin-1"), None if value is None else value.decode("latin-1"))
                    for name, value in pairs if name or value is not None]
        self.assertEqual(sigv4.parse_query(raw_query), expected)

    def test_parse_query_keeps_malformed_escapes_and_plus(self):
        self.assertEqual(sigv4.parse_query(b"a=%zz%4&b=1+2&c=%E9%e9\xe9"),
                         [("a", "%zz%4"), ("b", "1+2"), ("c", "\xe9\xe9\xe9")])

    @given(st.binary(max_size=40))
    def test_uri_encode_matches_quote(self, raw):
        self.assertEqual(sigv4.uri_encode(raw.decode("latin-1")),
                         quote_from_bytes(raw, safe=""))
