"""Backup and restore, as docs/operations.md tells an operator to do them:
a metadata snapshot of a running node (``z4 backup``) restored into a
fresh data dir with the chunk files (``z4 restore``), and a bucket
mirrored to another S3 endpoint and back with rclone."""

import filecmp
import os
import shutil
import sqlite3
import subprocess

from botocore.exceptions import ClientError
from twisted.trial import unittest

from tests.nodeprocess import NodeProcess, child_environment
from z4node.admin.backup import SnapshotError, restore_snapshot

NODE_KEY = "11" * 32
KiB = 1024


class SnapshotRestoreTests(unittest.TestCase):
    def test_restore_reads_back_the_objects_at_snapshot_time(self):
        """Snapshot, write more (new object, overwrite, delete), restore
        the snapshot with the chunk files into a fresh data dir: the
        objects read back as they were when the snapshot was taken."""
        env = {"Z4_ENCRYPTION_KEY": NODE_KEY}
        node = NodeProcess(self, env=env).start()
        s3 = node.client()
        s3.create_bucket(Bucket="kept")
        before = {"big": os.urandom(5 * 1024 * KiB + 3),    # two chunks
                  "small": b"inline bytes",                 # stored in the metadata
                  "doomed": os.urandom(300 * KiB)}
        for key, body in before.items():
            s3.put_object(Bucket="kept", Key=key, Body=body)
        snapshot = os.path.abspath(self.mktemp())
        code, out, err = node.z4("backup", snapshot)
        self.assertEqual(code, 0, err)
        self.assertIn("node key", out)

        s3.put_object(Bucket="kept", Key="big", Body=b"overwritten")
        s3.put_object(Bucket="kept", Key="later", Body=b"after the snapshot")
        s3.delete_object(Bucket="kept", Key="doomed")
        # The backup's chunk copy: chunks are immutable and named by their
        # hash, so a copy made after the snapshot holds every chunk it
        # names (GC keeps unreferenced chunks for 10 minutes).
        restored = os.path.abspath(self.mktemp())
        os.makedirs(restored, mode=0o700)
        shutil.copytree(os.path.join(node.data_dir, "chunks"),
                        os.path.join(restored, "chunks"))
        for name in ("credentials", "cluster.key"):
            shutil.copy2(os.path.join(node.data_dir, name), restored)
        node.stop()

        second = NodeProcess(self, data_dir=restored, env=env)
        code, out, err = second.z4("restore", snapshot)
        self.assertEqual(code, 0, err)
        second.start()
        s3 = second.client()
        for key, body in before.items():
            self.assertEqual(s3.get_object(Bucket="kept", Key=key)["Body"].read(), body, key)
        with self.assertRaises(ClientError) as caught:
            s3.get_object(Bucket="kept", Key="later")
        self.assertEqual(caught.exception.response["Error"]["Code"], "NoSuchKey")

        # A running node's data dir is refused; so is a second restore.
        code, _, err = second.z4("restore", snapshot)
        self.assertEqual(code, 1)
        self.assertIn("in use by another z4node process", err)

    def test_backup_refuses_to_overwrite(self):
        node = NodeProcess(self).start()
        existing = os.path.abspath(self.mktemp())
        with open(existing, "w") as f:
            f.write("precious")
        code, _, err = node.z4("backup", existing)
        self.assertEqual(code, 1)
        self.assertIn("exists: a snapshot never overwrites a file", err)
        with open(existing) as f:
            self.assertEqual(f.read(), "precious")

    def test_restore_refuses_what_is_no_snapshot(self):
        directory = self.mktemp()
        os.makedirs(directory)
        bogus = os.path.join(directory, "bogus")
        with open(bogus, "wb") as f:
            f.write(b"not a database at all" * 100)
        target = os.path.join(directory, "meta.sqlite3")
        with self.assertRaisesRegex(SnapshotError, "not a z4node snapshot"):
            restore_snapshot(bogus, target)
        empty = os.path.join(directory, "empty.sqlite3")
        sqlite3.connect(empty).execute("CREATE TABLE node_settings (name, value)").connection.commit()
        with self.assertRaisesRegex(SnapshotError, "holds no node id"):
            restore_snapshot(empty, target)
        self.assertFalse(os.path.exists(target))
        self.assertEqual(sorted(os.listdir(directory)), ["bogus", "empty.sqlite3"])


class RcloneMirrorTests(unittest.TestCase):
    def setUp(self):
        self.rclone = shutil.which("rclone")
        if self.rclone is None:
            raise unittest.SkipTest("rclone is not installed (.ci/run installs Debian's "
                                    "rclone package)")

    def remote_env(self, name, node):
        """rclone's configuration of ``node`` as remote ``name``, in the
        environment (the same settings as docs/operations.md's rclone.conf)."""
        access, secret = node.credentials()
        prefix = f"RCLONE_CONFIG_{name.upper()}_"
        return {prefix + "TYPE": "s3", prefix + "PROVIDER": "Other",
                prefix + "ACCESS_KEY_ID": access, prefix + "SECRET_ACCESS_KEY": secret,
                prefix + "ENDPOINT": node.endpoint, prefix + "REGION": "us-east-1",
                prefix + "FORCE_PATH_STYLE": "true"}

    def rclone_run(self, env, *args):
        env = child_environment(env)
        # rclone's AWS SDK fails on a custom CA bundle with its own
        # transport; the nodes here speak plain HTTP on loopback.
        env.pop("AWS_CA_BUNDLE", None)
        done = subprocess.run(
            [self.rclone, "--config", os.devnull, "--retries", "1", *args],
            env=env, capture_output=True, text=True, timeout=600,
            stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 0, f"rclone {args}:\n{done.stdout}\n{done.stderr}")

    def test_sync_a_bucket_to_another_node_and_back(self):
        a = NodeProcess(self).start()
        b = NodeProcess(self).start()
        env = dict(self.remote_env("a", a), **self.remote_env("b", b))
        source = os.path.abspath(self.mktemp())
        files = {"big.bin": os.urandom(9 * 1024 * KiB + 7),   # multipart for rclone
                 "dir/small.txt": b"hello\n",
                 "dir/sub/empty": b"",
                 "odd name &+é.txt": os.urandom(5000)}
        for name, body in files.items():
            path = os.path.join(source, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(body)
        a.client().create_bucket(Bucket="photos")
        self.rclone_run(env, "copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M",
                        source, "a:photos")

        # A -> B, then B -> A into a fresh bucket, then down to disk.
        self.rclone_run(env, "sync", "a:photos", "b:photos-mirror")
        self.rclone_run(env, "sync", "b:photos-mirror", "a:photos-back")
        self.rclone_run(env, "check", "a:photos", "a:photos-back")
        back = os.path.abspath(self.mktemp())
        self.rclone_run(env, "copy", "a:photos-back", back)
        for name, body in files.items():
            with open(os.path.join(back, name), "rb") as f:
                self.assertEqual(f.read(), body, name)
        self.assertEqual(filecmp.dircmp(source, back).diff_files, [])
