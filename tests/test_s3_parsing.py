"""Request parsing against a real node, from the fuzzer's findings (issue
10): every body is checked against the digests it was signed with, numbers
and dates a client sends are refused with S3 errors when they cannot be
used (never a 500), error documents stay well-formed whatever a key holds,
and user metadata and repeated headers read as S3 clients expect."""

import base64
import email.header
import hashlib
import json
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from tests import s3http
from tests.nodeprocess import NodeProcess
from tests.s3http import S3Assertions


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class ParsingTests(S3Assertions, TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="bkt")
        self.s3.put_object(Bucket="bkt", Key="k", Body=b"kept")
        self.s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
        self.s3.put_object(Bucket="locked", Key="k", Body=b"kept",
                           ContentMD5=md5_b64(b"kept"))

    def tearDown(self):
        log = self.node.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled", log)

    def send(self, method, target, body=b"", headers=None, **kwargs):
        return s3http.request(self.node, method, target, body=body, headers=headers, **kwargs)

    def assertStillServing(self):
        self.assertEqual(self.s3.get_object(Bucket="bkt", Key="k")["Body"].read(), b"kept")
        self.assertEqual(self.s3.get_object(Bucket="locked", Key="k")["Body"].read(), b"kept")

    # -- integrity ------------------------------------------------------------

    def test_every_body_is_checked_against_its_signature(self):
        upload = self.s3.create_multipart_upload(Bucket="bkt", Key="mp")["UploadId"]
        etags = [self.s3.upload_part(Bucket="bkt", Key="mp", UploadId=upload, PartNumber=n,
                                     Body=b"part %d" % n)["ETag"] for n in (1, 2)]

        def complete(number):
            return (b"<CompleteMultipartUpload><Part><PartNumber>%d</PartNumber>"
                    b"<ETag>%s</ETag></Part></CompleteMultipartUpload>"
                    % (number, etags[number - 1].encode()))
        tagging = b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag></TagSet></Tagging>"
        retention = (b"<Retention><Mode>GOVERNANCE</Mode>"
                     b"<RetainUntilDate>2099-01-01T00:00:00Z</RetainUntilDate></Retention>")
        # (method, target, the body signed, the body sent): each sent body
        # is one the operation would accept.
        cases = [
            ("PUT", "/newbucket", b"<CreateBucketConfiguration/>", b""),
            ("POST", f"/bkt/mp?uploadId={upload}", complete(1), complete(2)),
            ("PUT", "/bkt?tagging", tagging, tagging.replace(b"1", b"2")),
            ("PUT", "/bkt/k?tagging", tagging, tagging.replace(b"1", b"2")),
            ("PUT", "/bkt?versioning",
             b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>",
             b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"),
            ("PUT", "/bkt?cors",
             b"<CORSConfiguration><CORSRule><AllowedOrigin>a</AllowedOrigin>"
             b"<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
             b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
             b"<AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>"),
            ("PUT", "/bkt?lifecycle",
             b"<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix>x</Prefix></Filter>"
             b"<Status>Enabled</Status><Expiration><Days>9</Days></Expiration></Rule>"
             b"</LifecycleConfiguration>",
             b"<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix></Prefix></Filter>"
             b"<Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>"
             b"</LifecycleConfiguration>"),
            ("PUT", "/bkt?policy", b'{"Version": "2012-10-17", "Statement": []}',
             b'{"Version":"2012-10-17","Statement":[]}'),
            ("PUT", "/bkt?encryption",
             b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
             b"<SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault>"
             b"</Rule></ServerSideEncryptionConfiguration>", None),
            ("PUT", "/bkt?ownershipControls",
             b"<OwnershipControls><Rule><ObjectOwnership>BucketOwnerEnforced"
             b"</ObjectOwnership></Rule></OwnershipControls>",
             b"<OwnershipControls><Rule><ObjectOwnership>ObjectWriter"
             b"</ObjectOwnership></Rule></OwnershipControls>"),
            ("PUT", "/bkt?acl", b"<AccessControlPolicy/>", None),
            ("PUT", "/bkt/k?acl", b"<AccessControlPolicy/>", None),
            ("POST", "/bkt?delete", b"<Delete><Object><Key>nothing</Key></Object></Delete>",
             b"<Delete><Object><Key>k</Key></Object></Delete>"),
            ("PUT", "/locked?object-lock",
             b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>"
             b"</ObjectLockConfiguration>", None),
            ("PUT", "/locked/k?retention", retention, retention.replace(b"2099", b"2098")),
            ("PUT", "/locked/k?legal-hold", b"<LegalHold><Status>OFF</Status></LegalHold>",
             b"<LegalHold><Status>ON</Status></LegalHold>"),
            ("PUT", "/bkt/k", b"signed", b"sent!!"),
        ]
        for method, target, signed_body, sent_body in cases:
            if sent_body is None:
                sent_body = signed_body + b" "
            headers = s3http.sign(self.node, method, target,
                                  {"Content-MD5": md5_b64(sent_body)}, body=signed_body)
            reply = self.send(method, target, sent_body, headers, signed=False)
            self.assertErrorReply(reply, "XAmzContentSHA256Mismatch", 400)
        # Nothing changed.
        self.assertS3Error("NoSuchBucket", 404, self.s3.list_objects_v2, Bucket="newbucket")
        parts = self.s3.list_parts(Bucket="bkt", Key="mp", UploadId=upload)["Parts"]
        self.assertEqual([p["PartNumber"] for p in parts], [1, 2])
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bkt", Key="mp")
        self.assertS3Error("NoSuchTagSet", 404, self.s3.get_bucket_tagging, Bucket="bkt")
        self.assertEqual(self.s3.get_object_tagging(Bucket="bkt", Key="k")["TagSet"], [])
        self.assertNotIn("Status", self.s3.get_bucket_versioning(Bucket="bkt"))
        self.assertS3Error("NoSuchLifecycleConfiguration", 404,
                           self.s3.get_bucket_lifecycle_configuration, Bucket="bkt")
        self.assertS3Error("NoSuchObjectLockConfiguration", 404,
                           self.s3.get_object_retention, Bucket="locked", Key="k")
        self.assertStillServing()
        # The same bodies, honestly signed, are accepted.
        reply = self.send("POST", f"/bkt/mp?uploadId={upload}", complete(2))
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.s3.get_object(Bucket="bkt", Key="mp")["Body"].read(), b"part 2")
        self.assertEqual(self.send("PUT", "/newbucket").status, 200)

    # -- numbers --------------------------------------------------------------

    def test_numbers_are_ascii_digits_within_bounds(self):
        huge = "9" * 5000
        sup2, arabic3 = quote("²"), quote("٣")
        upload = self.s3.create_multipart_upload(Bucket="bkt", Key="mp")["UploadId"]
        refused = [
            ("GET", f"/bkt/k?partNumber={sup2}", {}),
            ("GET", "/bkt/k?partNumber=" + huge, {}),
            ("GET", f"/bkt?list-type=2&max-keys={sup2}", {}),
            ("GET", "/bkt?list-type=2&max-keys=" + huge, {}),
            ("GET", f"/bkt?uploads&max-uploads={arabic3}", {}),
            ("GET", f"/bkt/mp?uploadId={upload}&max-parts={sup2}", {}),
            ("GET", f"/bkt/mp?uploadId={upload}&part-number-marker={sup2}", {}),
            ("GET", f"/bkt/mp?uploadId={upload}&part-number-marker={2 ** 63}", {}),
            ("GET", f"/bkt/mp?uploadId={upload}&part-number-marker={huge}", {}),
            ("PUT", f"/bkt/mp?uploadId={upload}&partNumber={sup2}", {}),
            ("PUT", f"/bkt/mp?uploadId={upload}&partNumber=1",
             {"x-amz-copy-source": "/bkt/k", "x-amz-copy-source-range": f"bytes=0-{huge}"}),
        ]
        for method, target, headers in refused:
            reply = self.send(method, target, headers=headers)
            self.assertErrorReply(reply, "InvalidArgument", 400)
        # Headers holding bytes that read as Unicode digits (\xb2 is "²" in
        # ISO-8859-1) are sent unsigned, allowed by a policy: botocore would
        # sign them as UTF-8.
        self.s3.put_bucket_policy(Bucket="bkt", Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": "*",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": "arn:aws:s3:::bkt/*"}]}))
        # A Range that is not ASCII digits is no range: the whole object.
        for spec in ("bytes=²-3", "bytes=0-²", "bytes=-²", f"bytes=0-{huge}",
                     f"bytes={huge}-"):
            reply = self.send("GET", "/bkt/k", headers={"Range": spec}, signed=False)
            self.assertEqual((reply.status, reply.body), (200, b"kept"), spec)
        reply = self.send("GET", "/bkt/k", headers={"Range": "bytes=1-2"})
        self.assertEqual((reply.status, reply.body), (206, b"ep"))
        # A decoded length that is no number is not trusted for anything.
        reply = self.send("PUT", "/bkt/odd", b"body", {"x-amz-decoded-content-length": "²"},
                          signed=False)
        self.assertEqual(reply.status, 200, reply.body)
        # A part number in CompleteMultipartUpload likewise.
        document = (b"<CompleteMultipartUpload><Part><PartNumber>\xc2\xb2</PartNumber>"
                    b"<ETag>x</ETag></Part></CompleteMultipartUpload>")
        reply = self.send("POST", f"/bkt/mp?uploadId={upload}", document)
        self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertStillServing()

    def test_version_ids_we_could_not_have_issued(self):
        self.s3.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
        # Well-formed ids whose timestamps are past SQLite's 64-bit integers.
        for version_id in ("0" * 26, "7" * 26):
            for method in ("GET", "HEAD", "DELETE"):
                reply = self.send(method, f"/bkt/k?versionId={version_id}")
                self.assertEqual(reply.status, 400, (method, reply.body))
                if method != "HEAD":
                    self.assertErrorReply(reply, "InvalidArgument", 400)
        reply = self.send("GET", f"/bkt?versions&key-marker=k&version-id-marker={'0' * 26}")
        self.assertErrorReply(reply, "InvalidArgument", 400)
        self.assertStillServing()

    # -- dates ----------------------------------------------------------------

    def test_dates_past_the_year_9999_are_refused(self):
        late = "9999-12-31T23:59:59-14:00"
        document = (f"<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>{late}"
                    f"</RetainUntilDate></Retention>").encode()
        reply = self.send("PUT", "/locked/k?retention", document,
                          {"Content-MD5": md5_b64(document)})
        self.assertErrorReply(reply, "MalformedXML", 400)
        reply = self.send("PUT", "/locked/new", b"data", {
            "Content-MD5": md5_b64(b"data"), "x-amz-object-lock-mode": "GOVERNANCE",
            "x-amz-object-lock-retain-until-date": late})
        self.assertErrorReply(reply, "InvalidArgument", 400)
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="locked", Key="new")
        self.assertS3Error("NoSuchObjectLockConfiguration", 404,
                           self.s3.get_object_retention, Bucket="locked", Key="k")
        # Lifecycle rules whose dates could not be written either.
        for expiration in (b"<Days>2147483647</Days>", b"<Date>9999-12-31T00:00:00-14:00</Date>"):
            document = (b"<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix></Prefix>"
                        b"</Filter><Status>Enabled</Status><Expiration>" + expiration +
                        b"</Expiration></Rule></LifecycleConfiguration>")
            reply = self.send("PUT", "/bkt?lifecycle", document, {"Content-MD5": md5_b64(document)})
            self.assertEqual(reply.status, 400, reply.body)
        self.assertS3Error("NoSuchLifecycleConfiguration", 404,
                           self.s3.get_bucket_lifecycle_configuration, Bucket="bkt")
        self.assertStillServing()

    # -- XML and digests ------------------------------------------------------

    def test_unknown_xml_encoding_is_malformed_xml(self):
        document = (b'<?xml version="1.0" encoding="no-such-codec"?>'
                    b"<Tagging><TagSet></TagSet></Tagging>")
        for target in ("/bkt?tagging", "/bkt/k?tagging"):
            reply = self.send("PUT", target, document, {"Content-MD5": md5_b64(document)})
            self.assertErrorReply(reply, "MalformedXML", 400)
        self.assertStillServing()

    def test_non_ascii_checksum_headers_are_bad_digests(self):
        for name in ("x-amz-checksum-crc32", "x-amz-checksum-sha256"):
            reply = self.send("PUT", "/bkt/sum", b"data", {name: "é" * 8}, utf8_headers=True)
            self.assertErrorReply(reply, "BadDigest", 400)
        self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bkt", Key="sum")

    def test_error_documents_with_control_characters_parse(self):
        key = "ctl\x01\x07\x1b-key"
        error = self.assertS3Error("NoSuchKey", 404, self.s3.get_object, Bucket="bkt", Key=key)
        self.assertEqual(error["Error"]["Key"], "ctl%01%07%1B-key")
        self.s3.put_object(Bucket="bkt", Key=key, Body=b"x")
        # Listings without encoding-type=url are well-formed too.
        for target in ("/bkt?list-type=2", "/bkt", "/bkt?versions"):
            reply = self.send("GET", target)
            self.assertEqual(reply.status, 200)
            self.assertIn("ctl%01%07%1B-key", s3http.texts(reply.xml(), ".//{s3}Key"))

    # -- browser uploads ------------------------------------------------------

    def test_post_beyond_the_form_parser_limits_is_malformed(self):
        boundary = "b0undary"
        parts = [
            # A part with more headers than the parser takes.
            "".join(f"X-Header-{n}: v\r\n" for n in range(40)),
            # A header longer than the parser takes.
            "X-Long: " + "v" * 20000 + "\r\n",
        ]
        for headers in parts:
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n"
                    f"{headers}\r\nk\r\n--{boundary}--\r\n").encode()
            reply = self.send("POST", "/bkt", body, {
                "Content-Type": f"multipart/form-data; boundary={boundary}"}, signed=False)
            self.assertErrorReply(reply, "MalformedPOSTRequest", 400)
        self.assertStillServing()

    # -- metadata and repeated headers ----------------------------------------

    def test_user_metadata_is_rfc2047_encoded_as_s3_does(self):
        text = "café ünïcode ☃"
        encoded = "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="
        # A client that sends raw UTF-8 header bytes (Go, curl, browsers).
        reply = self.send("PUT", "/bkt/raw", b"x", {"x-amz-meta-name": text}, utf8_headers=True)
        self.assertEqual(reply.status, 200, reply.body)
        # boto3 sends only ASCII: encoded-words, decoded before they are
        # stored (so a Q-encoded ISO-8859-1 word comes back as UTF-8 B).
        self.s3.put_object(Bucket="bkt", Key="words", Body=b"x", Metadata={
            "name": encoded, "latin": "=?ISO-8859-1?Q?caf=E9?=", "plain": "just ascii"})
        for key in ("raw", "words"):
            metadata = self.s3.head_object(Bucket="bkt", Key=key)["Metadata"]
            self.assertEqual(metadata["name"], encoded)
            self.assertEqual(str(email.header.make_header(
                email.header.decode_header(metadata["name"]))), text)
        metadata = self.s3.get_object(Bucket="bkt", Key="words")["Metadata"]
        self.assertEqual(metadata, {"name": encoded, "plain": "just ascii",
                                    "latin": "=?UTF-8?B?Y2Fmw6k=?="})

    def test_repeated_headers_join_with_comma_space(self):
        reply = self.send("PUT", "/bkt/repeated", b"x",
                          {"x-amz-meta-colour": ("red", "blue")})
        self.assertEqual(reply.status, 200, reply.body)
        metadata = self.s3.head_object(Bucket="bkt", Key="repeated")["Metadata"]
        self.assertEqual(metadata["colour"], "red, blue")
