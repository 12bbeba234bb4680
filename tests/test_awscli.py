"""The aws CLI (v1, as installed beside the tests) against a real node:
``aws s3 mb/cp/sync/ls/rm/rb`` including a 100 MiB multipart round trip
and a sync of a 500-file tree, ``aws s3 presign`` fetched with curl, and
``aws s3api`` calls. Output is captured; no progress bars are drawn."""

import filecmp
import hashlib
import json
import os
import subprocess

from twisted.trial.unittest import TestCase

from tests.nodeprocess import NodeProcess

MiB = 1024 * 1024


def write_random(path, size):
    digest = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def multipart_etag(path, part_size):
    digests = []
    with open(path, "rb") as f:
        while True:
            block = f.read(part_size)
            if not block:
                break
            digests.append(hashlib.md5(block).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def tree_files(root):
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


class AwsCliTests(TestCase):
    def setUp(self):
        self.node = NodeProcess(self).start()
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)

    def aws(self, *args, **kwargs):
        return self.node.aws(*args, **kwargs)

    def api(self, *args):
        done = self.aws("s3api", *args, "--output", "json")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def test_mb_cp_ls_rm_rb_with_a_100_mib_file(self):
        self.aws("s3", "mb", "s3://cli-bucket")
        listing = self.aws("s3", "ls").stdout
        self.assertIn(" cli-bucket", listing)

        source = os.path.join(self.work, "big.bin")
        write_random(source, 100 * MiB)
        done = self.aws("s3", "cp", source, "s3://cli-bucket/dir/big.bin", "--only-show-errors")
        self.assertEqual((done.stdout, done.stderr), ("", ""))
        head = self.api("head-object", "--bucket", "cli-bucket", "--key", "dir/big.bin")
        self.assertEqual(head["ContentLength"], 100 * MiB)
        # The CLI uploads in 8 MiB parts: the ETag proves it was multipart.
        self.assertEqual(head["ETag"], multipart_etag(source, 8 * MiB))

        # Down again (parallel ranged GETs with If-Match) and compared.
        copy = os.path.join(self.work, "big.copy")
        self.aws("s3", "cp", "s3://cli-bucket/dir/big.bin", copy, "--only-show-errors")
        self.assertTrue(filecmp.cmp(source, copy, shallow=False))
        subprocess.run(["cmp", source, copy], check=True)

        # Server-side copy of a big object: the CLI copies it in ranged
        # UploadPartCopy parts.
        self.aws("s3", "cp", "s3://cli-bucket/dir/big.bin", "s3://cli-bucket/dir/big.copy",
                 "--only-show-errors")
        head = self.api("head-object", "--bucket", "cli-bucket", "--key", "dir/big.copy")
        self.assertEqual((head["ContentLength"], head["ETag"]),
                         (100 * MiB, multipart_etag(source, 8 * MiB)))
        self.aws("s3", "cp", "s3://cli-bucket/dir/big.copy", copy, "--only-show-errors")
        self.assertTrue(filecmp.cmp(source, copy, shallow=False))
        self.aws("s3", "rm", "s3://cli-bucket/dir/big.copy", "--only-show-errors")

        small = os.path.join(self.work, "small.txt")
        with open(small, "w") as f:
            f.write("small file\n")
        self.aws("s3", "cp", small, "s3://cli-bucket/small.txt", "--only-show-errors",
                 "--content-type", "text/plain", "--metadata", "origin=cli")
        head = self.api("head-object", "--bucket", "cli-bucket", "--key", "small.txt")
        self.assertEqual((head["ContentType"], head["Metadata"]), ("text/plain",
                                                                   {"origin": "cli"}))
        done = self.aws("s3", "cp", "s3://cli-bucket/small.txt", "-")
        self.assertEqual(done.stdout, "small file\n")
        # Server-side copy.
        self.aws("s3", "cp", "s3://cli-bucket/small.txt", "s3://cli-bucket/copied.txt",
                 "--only-show-errors")

        # Streamed from stdin (multipart of unknown length), moved, and
        # copied down recursively.
        streamed = os.urandom(9 * MiB + 7)
        self.aws("s3", "cp", "-", "s3://cli-bucket/streamed.bin", "--only-show-errors",
                 input=streamed)
        head = self.api("head-object", "--bucket", "cli-bucket", "--key", "streamed.bin")
        self.assertEqual(head["ContentLength"], len(streamed))
        self.assertTrue(head["ETag"].endswith('-2"'), head["ETag"])
        self.aws("s3", "mv", "s3://cli-bucket/streamed.bin", "s3://cli-bucket/dir/moved.bin",
                 "--only-show-errors")
        down = os.path.join(self.work, "down")
        self.aws("s3", "cp", "--recursive", "s3://cli-bucket/dir/", down, "--only-show-errors")
        self.assertEqual(sorted(os.listdir(down)), ["big.bin", "moved.bin"])
        with open(os.path.join(down, "moved.bin"), "rb") as f:
            self.assertTrue(f.read() == streamed)
        self.aws("s3", "rm", "s3://cli-bucket/dir/moved.bin", "--only-show-errors")

        lines = self.aws("s3", "ls", "s3://cli-bucket/").stdout.splitlines()
        self.assertEqual(sorted(line.split()[-1] for line in lines),
                         ["copied.txt", "dir/", "small.txt"])
        self.assertIn("PRE dir/", self.aws("s3", "ls", "s3://cli-bucket/").stdout)
        lines = self.aws("s3", "ls", "--recursive", "s3://cli-bucket/").stdout.splitlines()
        sizes = {line.split()[-1]: int(line.split()[2]) for line in lines}
        self.assertEqual(sizes, {"copied.txt": 11, "dir/big.bin": 100 * MiB,
                                 "small.txt": 11})

        # rb refuses a bucket with objects; rm empties it.
        done = self.aws("s3", "rb", "s3://cli-bucket", check=False)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("BucketNotEmpty", done.stderr)
        self.aws("s3", "rm", "s3://cli-bucket/small.txt", "--only-show-errors")
        self.aws("s3", "rm", "--recursive", "s3://cli-bucket/", "--only-show-errors")
        self.assertEqual(self.aws("s3", "ls", "--recursive", "s3://cli-bucket/",
                                  check=False).stdout, "")
        self.aws("s3", "rb", "s3://cli-bucket")
        self.assertNotIn("cli-bucket", self.aws("s3", "ls").stdout)

        # rb --force removes the objects first.
        self.aws("s3", "mb", "s3://forced")
        self.aws("s3", "cp", small, "s3://forced/a", "--only-show-errors")
        self.aws("s3", "rb", "--force", "s3://forced")
        self.assertNotIn("forced", self.aws("s3", "ls").stdout)

    def test_sync_of_500_files(self):
        tree = os.path.join(self.work, "tree")
        for a in range(5):
            for b in range(10):
                directory = os.path.join(tree, f"dir {a}", f"sub-{b}")
                os.makedirs(directory)
                for c in range(10):
                    with open(os.path.join(directory, f"file+{c}.txt"), "wb") as f:
                        # One empty file among them.
                        if (a, b, c) != (0, 0, 1):
                            f.write(f"{a}/{b}/{c}\n".encode() * (c + 1))
        files = tree_files(tree)
        self.assertEqual(len(files), 500)

        self.aws("s3", "mb", "s3://synced")
        done = self.aws("s3", "sync", tree, "s3://synced/backup", "--no-progress")
        self.assertEqual(done.stdout.count("upload: "), 500, done.stdout[-2000:])
        lines = self.aws("s3", "ls", "--recursive", "s3://synced/").stdout.splitlines()
        self.assertEqual(len(lines), 500)
        self.assertEqual(sorted(line.split(None, 3)[3] for line in lines),
                         sorted("backup/" + f for f in files))

        # Nothing changed: nothing is uploaded.
        done = self.aws("s3", "sync", tree, "s3://synced/backup", "--no-progress")
        self.assertEqual(done.stdout, "")
        # One file changed (size), one added, one removed with --delete.
        changed = os.path.join(tree, "dir 1", "sub-2", "file+3.txt")
        with open(changed, "ab") as f:
            f.write(b"more\n")
        with open(os.path.join(tree, "dir 4", "new file.txt"), "wb") as f:
            f.write(b"new\n")
        os.unlink(os.path.join(tree, "dir 0", "sub-0", "file+0.txt"))
        done = self.aws("s3", "sync", tree, "s3://synced/backup", "--no-progress", "--delete")
        actions = sorted(line.split(":")[0] for line in done.stdout.splitlines())
        self.assertEqual(actions, ["delete", "upload", "upload"], done.stdout)

        # And back down: the same tree.
        restored = os.path.join(self.work, "restored")
        self.aws("s3", "sync", "s3://synced/backup", restored, "--only-show-errors")
        self.assertEqual(tree_files(restored), tree_files(tree))
        match, mismatch, errors = filecmp.cmpfiles(tree, restored, tree_files(tree),
                                                   shallow=False)
        self.assertEqual((len(match), mismatch, errors), (500, [], []))
        done = self.aws("s3", "sync", "s3://synced/backup", restored, "--no-progress")
        self.assertEqual(done.stdout, "")

    def test_presign_and_s3api(self):
        self.api("create-bucket", "--bucket", "api-bucket")
        body = os.path.join(self.work, "body.bin")
        md5 = write_random(body, 300_000)
        put = self.api("put-object", "--bucket", "api-bucket", "--key", "folder/obj 1",
                       "--body", body, "--content-type", "application/x-test",
                       "--metadata", "k1=v1,k2=v2", "--cache-control", "max-age=9")
        self.assertEqual(put["ETag"], f'"{md5}"')
        head = self.api("head-object", "--bucket", "api-bucket", "--key", "folder/obj 1")
        self.assertEqual((head["ContentLength"], head["ContentType"], head["Metadata"],
                          head["CacheControl"]),
                         (300_000, "application/x-test", {"k1": "v1", "k2": "v2"}, "max-age=9"))
        out = os.path.join(self.work, "out.bin")
        got = self.api("get-object", "--bucket", "api-bucket", "--key", "folder/obj 1",
                       "--range", "bytes=100-199", out)
        self.assertEqual(got["ContentRange"], "bytes 100-199/300000")
        with open(body, "rb") as f, open(out, "rb") as g:
            self.assertEqual(g.read(), f.read()[100:200])

        # aws s3 presign (SigV2 from CLI v1) fetched with curl.
        url = self.aws("s3", "presign", "s3://api-bucket/folder/obj 1",
                       "--expires-in", "300").stdout.strip()
        self.assertTrue(url.startswith(self.node.endpoint + "/api-bucket/folder/obj%201?"), url)
        fetched = subprocess.run(["curl", "--silent", "--fail", "--noproxy", "*",
                                  "--max-time", "60", url],
                                 capture_output=True, timeout=90, check=True).stdout
        self.assertEqual(hashlib.md5(fetched).hexdigest(), md5)

        copied = self.api("copy-object", "--bucket", "api-bucket", "--key", "copy",
                          "--copy-source", "api-bucket/folder/obj 1")
        self.assertEqual(copied["CopyObjectResult"]["ETag"], f'"{md5}"')
        listing = self.api("list-objects-v2", "--bucket", "api-bucket", "--prefix", "folder/")
        self.assertEqual([o["Key"] for o in listing["Contents"]], ["folder/obj 1"])
        listing = self.api("list-objects", "--bucket", "api-bucket", "--delimiter", "/")
        self.assertEqual(([o["Key"] for o in listing["Contents"]],
                          [p["Prefix"] for p in listing["CommonPrefixes"]]),
                         (["copy"], ["folder/"]))
        location = self.api("get-bucket-location", "--bucket", "api-bucket")
        self.assertIsNone(location["LocationConstraint"])

        upload = self.api("create-multipart-upload", "--bucket", "api-bucket", "--key", "mp")
        part = self.api("upload-part", "--bucket", "api-bucket", "--key", "mp",
                        "--upload-id", upload["UploadId"], "--part-number", "1",
                        "--body", body)
        uploads = self.api("list-multipart-uploads", "--bucket", "api-bucket")
        self.assertEqual([u["UploadId"] for u in uploads["Uploads"]], [upload["UploadId"]])
        parts = json.dumps({"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        done = self.api("complete-multipart-upload", "--bucket", "api-bucket", "--key", "mp",
                        "--upload-id", upload["UploadId"], "--multipart-upload", parts)
        digest = hashlib.md5(bytes.fromhex(md5)).hexdigest()
        self.assertEqual(done["ETag"], f'"{digest}-1"')

        deleted = self.api("delete-objects", "--bucket", "api-bucket", "--delete",
                           json.dumps({"Objects": [{"Key": "copy"}, {"Key": "mp"},
                                                   {"Key": "folder/obj 1"}]}))
        self.assertEqual(sorted(d["Key"] for d in deleted["Deleted"]),
                         ["copy", "folder/obj 1", "mp"])
        failed = self.aws("s3api", "head-object", "--bucket", "api-bucket", "--key", "mp",
                          check=False)
        self.assertNotEqual(failed.returncode, 0)
        self.assertIn("404", failed.stderr)
        failed = self.aws("s3api", "get-object", "--bucket", "api-bucket", "--key", "mp", out,
                          check=False)
        self.assertIn("NoSuchKey", failed.stderr)
        self.api("delete-bucket", "--bucket", "api-bucket")
        self.assertEqual(self.api("list-buckets")["Buckets"], [])
