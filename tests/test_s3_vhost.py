"""Virtual-host-style addressing: with --domain, ``bucket.DOMAIN/key``
names bucket and key, signed with SigV4 or SigV2, beside path style."""

import http.client

from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess

DOMAIN = "s3.example.test"


class VirtualHostTests(TestCase):
    def send(self, node, method, host, path, body=b"", signer=S3SigV4Auth):
        access, secret = node.credentials()
        url = f"http://{host}{path}"
        request = AWSRequest(method=method, url=url, data=body,
                             headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        if signer is S3SigV4Auth:
            signer(Credentials(access, secret), "s3", "us-east-1").add_auth(request)
        else:
            # SigV2 signs /bucket/key even for a virtual-hosted request, as
            # botocore's S3 client sets it up (auth_path).
            request.auth_path = "/" + host.split(".", 1)[0] + path.split("?")[0]
            signer(Credentials(access, secret)).add_auth(request)
        prepared = request.prepare()
        # The request goes to 127.0.0.1; only the Host header names the bucket.
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        headers = dict(prepared.headers.items())
        headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, data

    def test_bucket_in_host(self):
        node = NodeProcess(self, args=["--domain", DOMAIN]).start()
        node.client().create_bucket(Bucket="vhosted")
        host = f"vhosted.{DOMAIN}:{node.port}"
        status, _ = self.send(node, "PUT", host, "/dir/a%20b.txt", b"hello")
        self.assertEqual(status, 200)
        status, body = self.send(node, "GET", host, "/dir/a%20b.txt")
        self.assertEqual((status, body), (200, b"hello"))
        status, body = self.send(node, "GET", host, "/?list-type=2")
        self.assertEqual(status, 200)
        self.assertIn(b"<Key>dir/a b.txt</Key>", body)
        status, body = self.send(node, "GET", host, "/dir/a%20b.txt", signer=HmacV1Auth)
        self.assertEqual((status, body), (200, b"hello"))
        # Path style keeps working beside it.
        got = node.client().get_object(Bucket="vhosted", Key="dir/a b.txt")
        self.assertEqual(got["Body"].read(), b"hello")

    def test_unknown_domain_is_path_style(self):
        node = NodeProcess(self, args=["--domain", DOMAIN]).start()
        node.client().create_bucket(Bucket="plain")
        status, body = self.send(node, "GET", f"plain.elsewhere.test:{node.port}", "/plain")
        self.assertEqual(status, 200)
        self.assertIn(b"<Name>plain</Name>", body)
