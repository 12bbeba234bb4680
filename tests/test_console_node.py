"""The console against a real ``twistd z4node``, over plain HTTP (no
browser): a key that is not admin sees and does only what its S3
permissions allow, the object actions run as S3 requests (versions,
delete markers), and what users named is escaped in the pages.

Every process this test starts, it stops. Only 127.0.0.1.
"""

import http.client
import re
from urllib.parse import quote, urlencode

from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess


class ConsoleClient:
    """One browser session of the console, over http.client."""

    def __init__(self, node):
        self.port = node.port
        self.cookie = None
        self.csrf = None

    def request(self, method, path, body=b"", headers=None):
        """(status, headers dict with lower-case names, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = "z4console=" + self.cookie
        connection.request(method, "/_z4/console" + path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        answer = {k.lower(): v for k, v in response.getheaders()}
        connection.close()
        cookie = answer.get("set-cookie")
        if cookie:
            self.cookie = re.match(r"z4console=([^;]*);", cookie).group(1)
        token = re.search(rb'name="csrf" value="([^"]+)"', data)
        if token:
            self.csrf = token.group(1).decode()
        return response.status, answer, data

    def post(self, path, **fields):
        return self.request("POST", path, urlencode(dict(fields, csrf=self.csrf)).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def log_in(self, access, secret):
        self.request("GET", "/login")
        status, _, body = self.post("/login", access_key=access, secret=secret)
        assert status == 303, body
        self.request("GET", "/buckets")

    def upload(self, bucket, key, data):
        return self.request("PUT", f"/object/{bucket}?key={quote(key, safe='')}", data,
                            {"X-Z4-CSRF": self.csrf})


def peak_rss_kib(node):
    """The node process's peak resident memory so far (VmHWM), in KiB."""
    with open(f"/proc/{node.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def error_code(body):
    match = re.search(rb'id="error-code">([^<]+)<', body)
    return match.group(1).decode() if match else None


class ConsoleNodeTests(TestCase):
    timeout = 120

    def setUp(self):
        self.node = NodeProcess(self).start()
        self.s3 = self.node.client()
        self.s3.create_bucket(Bucket="shared")
        self.s3.create_bucket(Bucket="private")
        self.s3.put_object(Bucket="shared", Key="docs/readme.txt", Body=b"hello")
        code, out, err = self.node.z4("key", "create", "reader", "--json")
        self.assertEqual(code, 0, err)
        self.reader = (re.search(r'"access_key_id": "([^"]+)"', out).group(1),
                       re.search(r'"secret_access_key": "([^"]+)"', out).group(1))
        code, _, err = self.node.z4("bucket", "allow", "shared", "--key", "reader", "--read")
        self.assertEqual(code, 0, err)

    def test_a_key_does_only_what_its_grants_allow(self):
        console = ConsoleClient(self.node)
        console.log_in(*self.reader)
        _, _, body = console.request("GET", "/buckets")
        self.assertIn(b">shared<", body)
        self.assertNotIn(b">private<", body)
        status, _, body = console.request("GET", "/buckets/shared?prefix=docs/")
        self.assertEqual(status, 200)
        self.assertIn(b'data-key="docs/readme.txt"', body)
        status, _, body = console.request("GET", "/object/shared?key=docs/readme.txt")
        self.assertEqual((status, body), (200, b"hello"))
        for method, path in (("GET", "/buckets/private"), ("GET", "/cluster"),
                             ("GET", "/object/private?key=x")):
            status, _, body = console.request(method, path)
            self.assertEqual((status, error_code(body)), (403, "AccessDenied"), path)
        status, _, body = console.upload("shared", "docs/new.txt", b"refused")
        self.assertEqual((status, error_code(body)), (403, "AccessDenied"))
        status, _, body = console.post("/delete/shared", key="docs/readme.txt")
        self.assertEqual((status, error_code(body)), (403, "AccessDenied"))
        status, _, body = console.post("/grants", key="reader", bucket="shared",
                                       write="1", change="allow")
        self.assertEqual(status, 403)
        self.assertEqual(self.s3.get_object(Bucket="shared", Key="docs/readme.txt")
                         ["Body"].read(), b"hello")
        # Given write, the same key uploads and deletes.
        self.node.z4("bucket", "allow", "shared", "--key", "reader", "--write")
        status, _, body = console.upload("shared", "docs/new.txt", b"written")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.s3.get_object(Bucket="shared", Key="docs/new.txt")
                         ["Body"].read(), b"written")

    def test_upload_streams(self):
        """128 MiB through the console raise the node's peak memory by far
        less than 128 MiB: the body streams into the object layer."""
        piece = bytes(range(256)) * 4096  # 1 MiB
        pieces = 128
        console = ConsoleClient(self.node)
        console.log_in(*self.node.credentials())
        before = peak_rss_kib(self.node)
        status, _, body = console.request(
            "PUT", "/object/shared?key=big", (piece for _ in range(pieces)),
            {"X-Z4-CSRF": console.csrf, "Content-Length": str(len(piece) * pieces)})
        self.assertEqual(status, 200, body)
        grown_mib = (peak_rss_kib(self.node) - before) / 1024
        # Measured: 15 MiB for 128 MiB, 16 MiB for 256 MiB (the upload
        # budget allows 24 MiB per upload).
        self.assertLess(grown_mib, 64)
        head = self.s3.head_object(Bucket="shared", Key="big")
        self.assertEqual(head["ContentLength"], len(piece) * pieces)

    def test_versions_and_deletes_are_s3_requests(self):
        self.s3.put_bucket_versioning(Bucket="shared",
                                      VersioningConfiguration={"Status": "Enabled"})
        console = ConsoleClient(self.node)
        console.log_in(*self.node.credentials())
        for body in (b"one", b"two"):
            status, _, answer = console.upload("shared", "v.txt", body)
            self.assertEqual(status, 200, answer)
        versions = self.s3.list_object_versions(Bucket="shared", Prefix="v.txt")["Versions"]
        status, _, page = console.request("GET", "/versions/shared?key=v.txt")
        self.assertEqual(status, 200)
        for version in versions:
            self.assertIn(version["VersionId"].encode(), page)
        oldest = versions[-1]["VersionId"]
        status, _, body = console.request(
            "GET", f"/object/shared?key=v.txt&version={quote(oldest)}")
        self.assertEqual(body, b"one")
        status, headers, _ = console.post("/delete/shared", key="v.txt")
        self.assertEqual(status, 303)
        self.assertEqual(headers["location"], "/_z4/console/buckets/shared")
        # A delete marker now, the versions kept.
        _, _, page = console.request("GET", "/versions/shared?key=v.txt")
        self.assertIn(b"delete marker", page)
        status, _, body = console.post("/delete/shared", key="v.txt", version=oldest)
        self.assertEqual(status, 303, body)
        remaining = self.s3.list_object_versions(Bucket="shared", Prefix="v.txt")
        self.assertNotIn(oldest, [v["VersionId"] for v in remaining["Versions"]])

    def test_versions_page_through(self):
        self.s3.put_bucket_versioning(Bucket="shared",
                                      VersioningConfiguration={"Status": "Enabled"})
        # One page and one more; "v" and "v2" share the prefix, only "v" shows.
        ids = [self.s3.put_object(Bucket="shared", Key="v", Body=b"%d" % i)["VersionId"]
               for i in range(101)]
        self.s3.put_object(Bucket="shared", Key="v2", Body=b"other")
        console = ConsoleClient(self.node)
        console.log_in(*self.node.credentials())
        _, _, page = console.request("GET", "/versions/shared?key=v")
        shown = re.findall(rb"<tr><td>([^<]+)</td>", page)
        more = re.search(rb'<a href="/_z4/console([^"]+)">More versions', page)
        self.assertIsNotNone(more, page)
        _, _, rest = console.request("GET", more.group(1).decode().replace("&amp;", "&"))
        shown += re.findall(rb"<tr><td>([^<]+)</td>", rest)
        self.assertEqual([v.decode() for v in shown], ids[::-1])
        self.assertNotIn(b"More versions", rest)

    def test_names_are_escaped(self):
        name = '<img src=x onerror="alert(1)">&.txt'
        self.s3.put_object(Bucket="shared", Key=name, Body=b"x")
        console = ConsoleClient(self.node)
        console.log_in(*self.node.credentials())
        _, _, page = console.request("GET", "/buckets/shared")
        self.assertNotIn(b"<img", page)
        self.assertIn(b"&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;.txt", page)
        status, _, body = console.request("GET", "/object/shared?key=" + quote(name))
        self.assertEqual((status, body), (200, b"x"))

    def test_admin_manages_keys(self):
        console = ConsoleClient(self.node)
        console.log_in(*self.node.credentials())
        status, _, page = console.post("/keys/create", name="made-here")
        self.assertEqual(status, 200, page)
        made = (re.search(rb'id="created-id">([^<]+)<', page).group(1).decode(),
                re.search(rb'id="created-secret">([^<]+)<', page).group(1).decode())
        status, _, _ = console.post("/grants", key="made-here", bucket="private",
                                    owner="1", change="allow")
        self.assertEqual(status, 303)
        other = ConsoleClient(self.node)
        other.log_in(*made)
        status, _, body = other.upload("private", "mine.txt", b"owned")
        self.assertEqual(status, 200, body)
        status, _, body = console.post("/keys/delete", name="made-here")
        self.assertEqual(status, 303, body)
        # Its session ends with it.
        status, headers, _ = other.request("GET", "/buckets")
        self.assertEqual((status, headers["location"]), (303, "/_z4/console/login"))
        status, _, body = console.post("/keys/create", name="bad name!")
        self.assertEqual((status, error_code(body)), (400, "Refused"))
