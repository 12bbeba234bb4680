"""Tests for SigV2 verification through z4node.s3.auth.authenticate: AWS's
published examples, requests and URLs signed by botocore's HmacV1Auth and
HmacV1QueryAuth, the variant readings clients sign, and failures."""

import base64
import calendar
import hashlib
import hmac
from urllib.parse import quote

from botocore.auth import HmacV1Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from z4node.s3.auth import RequestView, authenticate

from tests.signing import (ACCESS_KEY, AWKWARD_KEYS, AWS_ACCESS_KEY, AWS_SECRETS, NOW, SECRET_KEY,
                           SECRETS, CapturingClient, FailureAssertions, pin_clocks, replace,
                           view_from_url, with_headers)


def at(day, hms):
    """Unix seconds of an AWS example date in March 2007."""
    hours, minutes, seconds = map(int, hms.split(":"))
    return float(calendar.timegm((2007, 3, day, hours, minutes, seconds)))


def sign_v2(string_to_sign, secret=SECRET_KEY):
    return base64.b64encode(
        hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()


class AwsExampleTests(FailureAssertions, SynchronousTestCase):
    """AWS S3 developer guide, "Signing and authenticating REST requests"."""

    def example(self, method, path, signature, date, query=b"", bucket="johnsmith", **headers):
        headers = {name.replace("_", "-"): value for name, value in headers.items()}
        headers.setdefault("host", f"{bucket}.s3.amazonaws.com" if bucket else "s3.amazonaws.com")
        headers["date"] = date
        headers["authorization"] = f"AWS {AWS_ACCESS_KEY}:{signature}"
        return RequestView(method, path, query, headers, bucket)

    def assertVerifies(self, view, now):
        credentials = authenticate(view, AWS_SECRETS.get, now)
        self.assertEqual((credentials.access_key_id, credentials.signature_version,
                          credentials.payload_hash, credentials.presigned, credentials.chunk_signer),
                         (AWS_ACCESS_KEY, 2, "UNSIGNED-PAYLOAD", False, None))

    def test_object_get(self):
        view = self.example("GET", b"/photos/puppy.jpg", "bWq2s1WEIj+Ydj0vQ697zp+IXMU=",
                            "Tue, 27 Mar 2007 19:36:42 +0000")
        self.assertVerifies(view, at(27, "19:36:42"))
        self.assertFails("SignatureDoesNotMatch", replace(view, raw_path=b"/photos/kitten.jpg"),
                         AWS_SECRETS, at(27, "19:36:42"))
        # The bucket from the Host header is part of what is signed.
        self.assertFails("SignatureDoesNotMatch", replace(view, virtual_host_bucket=None),
                         AWS_SECRETS, at(27, "19:36:42"))

    def test_object_get_newer_edition(self):
        view = self.example("GET", b"/photos/puppy.jpg", "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
                            "Tue, 27 Mar 2007 19:36:42 +0000", bucket="awsexamplebucket1")
        self.assertVerifies(view, at(27, "19:36:42"))

    def test_object_put(self):
        view = self.example("PUT", b"/photos/puppy.jpg", "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
                            "Tue, 27 Mar 2007 21:15:45 +0000", content_type="image/jpeg",
                            content_length="94328")
        self.assertVerifies(view, at(27, "21:15:45"))
        self.assertFails("SignatureDoesNotMatch", with_headers(view, content_type="image/png"),
                         AWS_SECRETS, at(27, "21:15:45"))

    def test_list(self):
        view = self.example("GET", b"/", "htDYFYduRNen8P9ZfE/s9SuKy0U=",
                            "Tue, 27 Mar 2007 19:42:41 +0000",
                            query=b"prefix=photos&max-keys=50&marker=puppy", user_agent="Mozilla/5.0")
        # Listing parameters are not sub-resources: not signed.
        self.assertVerifies(view, at(27, "19:42:41"))
        self.assertVerifies(replace(view, raw_query=b"prefix=videos"), at(27, "19:42:41"))

    def test_fetch_acl(self):
        view = self.example("GET", b"/", "c2WLPFtWHVgbEmeEG93a4cG37dM=",
                            "Tue, 27 Mar 2007 19:44:46 +0000", query=b"acl")
        self.assertVerifies(view, at(27, "19:44:46"))
        self.assertFails("SignatureDoesNotMatch", replace(view, raw_query=b"policy"),
                         AWS_SECRETS, at(27, "19:44:46"))

    def test_delete_with_x_amz_date(self):
        # The example signs x-amz-date's value on the Date line.
        view = self.example("DELETE", b"/johnsmith/photos/puppy.jpg", "lx3byBScXR6KzyMaifNkardMwNk=",
                            "Tue, 27 Mar 2007 21:20:27 +0000", bucket=None,
                            x_amz_date="Tue, 27 Mar 2007 21:20:26 +0000", user_agent="dotnet")
        self.assertVerifies(view, at(27, "21:20:26"))

    def test_upload_with_amz_headers(self):
        view = self.example(
            "PUT", b"/db-backup.dat.gz", "ilyl83RwaSoYIEdixDQcA4OnAnc=",
            "Tue, 27 Mar 2007 21:06:08 +0000", bucket="static.johnsmith.net",
            host="static.johnsmith.net:8080", x_amz_acl="public-read",
            content_type="application/x-download", content_md5="4gJE4saaMU4BqNR0kLY+lw==",
            x_amz_meta_reviewedby="joe@johnsmith.net,jane@johnsmith.net",
            x_amz_meta_filechecksum="0x02661779", x_amz_meta_checksumalgorithm="crc32",
            content_disposition="attachment; filename=database.dat", content_encoding="gzip",
            content_length="5913339")
        self.assertVerifies(view, at(27, "21:06:08"))
        self.assertFails("SignatureDoesNotMatch", with_headers(view, x_amz_acl="private"),
                         AWS_SECRETS, at(27, "21:06:08"))

    def test_query_string_authentication(self):
        view = RequestView(
            "GET", b"/photos/puppy.jpg",
            b"AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1175139620"
            b"&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D",
            {"host": "johnsmith.s3.amazonaws.com"}, "johnsmith")
        credentials = authenticate(view, AWS_SECRETS.get, 1175139620)
        self.assertTrue(credentials.presigned)
        self.assertEqual(credentials.signature_version, 2)
        error = self.assertFails("AccessDenied", view, AWS_SECRETS, 1175139621)
        self.assertEqual(error.message, "Request has expired")


class BotocoreHeaderTests(FailureAssertions, SynchronousTestCase):
    """Requests signed by botocore's HmacV1Auth (signature_version "s3")."""

    def setUp(self):
        pin_clocks(self)
        self.client = CapturingClient(signature_version="s3")

    def assertVerifies(self, view):
        credentials = authenticate(view, SECRETS.get, NOW)
        self.assertEqual((credentials.access_key_id, credentials.signature_version), (ACCESS_KEY, 2))

    def test_awkward_keys(self):
        for key in AWKWARD_KEYS:
            view, _ = self.client.call("put_object", Bucket="bucket", Key=key, Body=b"data",
                                       Metadata={"who": "me"}, ContentType="text/plain")
            self.assertTrue(view.headers["authorization"].startswith(f"AWS {ACCESS_KEY}:"))
            self.assertVerifies(view)
            view, _ = self.client.call("get_object", Bucket="bucket", Key=key, VersionId="3/4+5",
                                       ResponseContentDisposition='inline; filename="x y"')
            self.assertVerifies(view)

    def test_subresources(self):
        for operation, params in [
            ("get_bucket_acl", {}),
            ("list_objects", {"Prefix": "a b", "Marker": "m"}),
            ("list_object_versions", {"Prefix": "p"}),
            ("get_object_tagging", {"Key": "k"}),
            ("create_multipart_upload", {"Key": "k"}),
            ("upload_part", {"Key": "k", "UploadId": "u/p+id=", "PartNumber": 2, "Body": b"x"}),
            ("delete_objects", {"Delete": {"Objects": [{"Key": "a"}, {"Key": "b c"}]}}),
        ]:
            view, _ = self.client.call(operation, Bucket="bucket", **params)
            self.assertVerifies(view)
            self.assertFails("SignatureDoesNotMatch", replace(view, raw_query=view.raw_query + b"&acl"))

    def test_retention_as_botocore_signs_it(self):
        # botocore's HmacV1Auth does not sign ?retention.
        view, _ = self.client.call("get_object_retention", Bucket="bucket", Key="locked")
        self.assertEqual(view.raw_query, b"retention")
        self.assertVerifies(view)

    def test_retention_as_aws_documents_it(self):
        date = "Fri, 01 Mar 2024 12:30:15 GMT"
        signature = sign_v2(f"GET\n\n\n{date}\n/bucket/locked?retention&versionId=7")
        view = RequestView("GET", b"/bucket/locked", b"versionId=7&retention",
                           {"host": "localhost", "date": date,
                            "authorization": f"AWS {ACCESS_KEY}:{signature}"})
        self.assertVerifies(view)

    def test_virtual_host_style(self):
        self.client = CapturingClient(signature_version="s3", addressing_style="virtual")
        view, _ = self.client.call("get_object", Bucket="bucket", Key="a b/c")
        self.assertEqual(view.raw_path, b"/a%20b/c")
        self.assertVerifies(replace(view, virtual_host_bucket="bucket"))
        self.assertFails("SignatureDoesNotMatch", view)

    def x_amz_date_request(self):
        request = AWSRequest("GET", "http://localhost:9670/bucket/key",
                             headers={"x-amz-date": "Fri, 01 Mar 2024 12:30:15 GMT"})
        HmacV1Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY)).add_auth(request)
        return view_from_url("GET", request.url, request.headers)

    def test_x_amz_date_as_botocore_signs_it(self):
        # botocore signs its Date header and lists x-amz-date with the others.
        self.assertVerifies(self.x_amz_date_request())

    def test_x_amz_date_as_aws_documents_it(self):
        # AWS's rule: with x-amz-date present, the Date line is empty.
        view = self.x_amz_date_request()
        amz_date = view.headers["x-amz-date"]
        signature = sign_v2(f"GET\n\n\n\nx-amz-date:{amz_date}\n/bucket/key")
        self.assertVerifies(with_headers(view, date=None, authorization=f"AWS {ACCESS_KEY}:{signature}"))

    def test_path_signed_canonically(self):
        # A client that signs the canonical encoding of an oddly-encoded path.
        date = "Fri, 01 Mar 2024 12:30:15 GMT"
        signature = sign_v2(f"GET\n\n\n{date}\n/bucket/a%20b~")
        view = RequestView("GET", b"/bucket/a%20b%7e", b"",
                           {"date": date, "authorization": f"AWS {ACCESS_KEY}:{signature}"})
        self.assertVerifies(view)

    def test_tampering_fails(self):
        view, _ = self.client.call("put_object", Bucket="bucket", Key="k", Body=b"data",
                                   ContentType="text/plain", ContentMD5="kAFQmDzST7DWlj99KOF/cg==",
                                   Metadata={"owner": "alice"})
        self.assertVerifies(view)
        for tampered in [
            replace(view, method="POST"),
            replace(view, raw_path=b"/bucket/l"),
            replace(view, raw_query=b"uploads"),
            with_headers(view, content_type="text/html"),
            with_headers(view, content_md5="AAAAAAAAAAAAAAAAAAAAAA=="),
            with_headers(view, x_amz_meta_owner="mallory"),
            with_headers(view, x_amz_acl="public-read"),
            with_headers(view, date="Fri, 01 Mar 2024 12:30:16 GMT"),
        ]:
            self.assertFails("SignatureDoesNotMatch", tampered)

    def test_errors(self):
        view, _ = self.client.call("get_object", Bucket="bucket", Key="k")
        self.assertFails("InvalidAccessKeyId", view, secrets={})
        self.assertFails("SignatureDoesNotMatch", view, secrets={ACCESS_KEY: "other"})
        for now in (NOW - 16 * 60, NOW + 16 * 60):
            self.assertFails("RequestTimeTooSkewed", view, now=now)
        authenticate(view, SECRETS.get, NOW + 14 * 60)
        for date in (None, "yesterday"):
            error = self.assertFails("AccessDenied", with_headers(view, date=date))
            self.assertIn("Date", error.message)
        for authorization in ("AWS ", f"AWS {ACCESS_KEY}", f"AWS :{'x' * 28}", f"AWS {ACCESS_KEY}:"):
            self.assertFails("InvalidArgument", with_headers(view, authorization=authorization))

    @settings(max_examples=50, deadline=None)
    @given(st.text(min_size=1, max_size=40).filter(lambda key: "\x00" not in key))
    def test_any_key(self, key):
        view, _ = self.client.call("get_object", Bucket="bucket", Key=key)
        self.assertVerifies(view)


class BotocorePresignedTests(FailureAssertions, SynchronousTestCase):
    """URLs presigned by botocore's HmacV1QueryAuth: what boto3's
    generate_presigned_url and ``aws s3 presign`` (v1) give by default."""

    def setUp(self):
        pin_clocks(self)
        # Default configuration: SigV2 for presigning against a custom endpoint.
        self.client = CapturingClient(signature_version=None)

    def presign(self, key="some key+😀.txt", method="GET", operation="get_object", expires_in=3600,
                **params):
        url = self.client.presign(operation, expires_in=expires_in, Bucket="bucket", Key=key, **params)
        self.assertIn("AWSAccessKeyId=", url)
        return view_from_url(method, url)

    def assertVerifies(self, view, now=NOW):
        credentials = authenticate(view, SECRETS.get, now)
        self.assertEqual((credentials.access_key_id, credentials.signature_version,
                          credentials.presigned, credentials.payload_hash),
                         (ACCESS_KEY, 2, True, "UNSIGNED-PAYLOAD"))

    def test_awkward_keys(self):
        for key in AWKWARD_KEYS:
            view = self.presign(key)
            self.assertIn(quote(key, safe="/~").encode(), view.raw_path)
            self.assertVerifies(view)

    def test_response_overrides(self):
        view = self.presign(ResponseContentDisposition='attachment; filename="a b&c=d+e.txt"',
                            ResponseContentType="text/plain")
        self.assertVerifies(view)
        self.assertFails("SignatureDoesNotMatch",
                         replace(view, raw_query=view.raw_query.replace(b"text%2Fplain", b"text%2Fhtml")))

    def test_headers_carried_in_the_query(self):
        view = self.presign(method="PUT", operation="put_object", ContentType="image/png",
                            Metadata={"owner": "alice"}, ACL="public-read")
        self.assertIn(b"x-amz-meta-owner=alice", view.raw_query)
        self.assertVerifies(view)
        self.assertVerifies(with_headers(view, content_type="image/png", x_amz_acl="public-read"))
        self.assertFails("SignatureDoesNotMatch", with_headers(view, x_amz_acl="private"))
        self.assertFails("SignatureDoesNotMatch", with_headers(view, content_type="text/html"))

    def test_expiry(self):
        view = self.presign(expires_in=60)
        self.assertVerifies(view, now=NOW + 60)
        error = self.assertFails("AccessDenied", view, now=NOW + 61)
        self.assertEqual(error.message, "Request has expired")
        # SigV2 has no seven-day limit.
        self.assertVerifies(self.presign(expires_in=30 * 86400), now=NOW + 29 * 86400)

    def test_tampering_fails(self):
        view = self.presign()
        for tampered in [
            replace(view, method="DELETE"),
            replace(view, raw_path=view.raw_path + b"2"),
            replace(view, raw_query=view.raw_query.replace(b"Expires=", b"Expires=9")),
            replace(view, raw_query=view.raw_query + b"&versionId=2"),
        ]:
            self.assertFails("SignatureDoesNotMatch", tampered)

    def test_errors(self):
        view = self.presign()
        self.assertFails("InvalidAccessKeyId", view, secrets={})
        parts = view.raw_query.split(b"&")
        for name in (b"Expires", b"Signature", b"AWSAccessKeyId"):
            kept = b"&".join(part for part in parts if not part.startswith(name + b"="))
            self.assertFails("AccessDenied", replace(view, raw_query=kept))
        bad_expires = b"&".join(b"Expires=tomorrow" if part.startswith(b"Expires=") else part
                                for part in parts)
        self.assertFails("AccessDenied", replace(view, raw_query=bad_expires))

    @settings(max_examples=50, deadline=None)
    @given(st.text(min_size=1, max_size=40).filter(lambda key: "\x00" not in key))
    def test_any_key(self, key):
        self.assertVerifies(self.presign(key))
