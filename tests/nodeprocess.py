"""Real ``twistd z4node`` processes for integration tests.

A :class:`NodeProcess` runs the node from this checkout on a free loopback
port with its own data dir, waits until it answers ``/_z4/ping``, and is
stopped (SIGTERM, then SIGKILL) by the test's cleanup. Clients made here
talk only to 127.0.0.1.
"""

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import z4node

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(z4node.__file__)))
BIN = os.path.dirname(sys.executable)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_environment(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = SOURCE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                 "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(name, None)
    env.update(extra or {})
    return env


class NodeProcess:
    """One node; ``start()`` blocks until it serves (tests call it once)."""

    start_timeout = 30.0

    def __init__(self, testcase, data_dir=None, port=None, env=None, args=()):
        self.data_dir = os.path.abspath(data_dir or testcase.mktemp())
        os.makedirs(self.data_dir, exist_ok=True)
        self.port = port or free_port()
        # The cluster's UDP ports: never the defaults, so that nodes of
        # concurrent tests do not answer each other's gossip.
        self.gossip_port = free_port(socket.SOCK_DGRAM)
        self.dht_port = free_port(socket.SOCK_DGRAM)
        self.env = env or {}
        self.args = list(args)
        self.process = None
        self.log_path = self.data_dir + ".log"
        testcase.addCleanup(self.stop)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", f"--logfile={self.log_path}", "z4node",
                "--port", str(self.port), "--data", self.data_dir,
                "--gossip-port", str(self.gossip_port), "--dht-port", str(self.dht_port),
                *self.args]

    def start(self):
        # A session of its own: a signal a test sends the node (SIGSTOP,
        # SIGKILL) or the terminal sends the test never crosses over.
        self.process = subprocess.Popen(
            self.command(), env=child_environment(self.env), cwd=os.path.dirname(self.data_dir),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}: "
                                   f"{self.process.stderr.read().decode()}\n{self.log()}")
            try:
                urllib.request.urlopen(self.endpoint + "/_z4/ping", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node did not start in {self.start_timeout}s:\n{self.log()}")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def kill(self, sig=signal.SIGKILL):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process.stderr.close()

    def credentials(self):
        """The admin key saved in the data dir: (access key id, secret)."""
        parser = configparser.ConfigParser()
        parser.read(os.path.join(self.data_dir, "credentials"))
        section = parser["default"]
        return section["aws_access_key_id"], section["aws_secret_access_key"]

    def client(self, credentials=None, **config):
        """A boto3 S3 client (default settings) for this node."""
        import boto3
        from botocore.config import Config

        access, secret = credentials or self.credentials()
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=access,
            aws_secret_access_key=secret, region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, **config))

    def z4(self, *args):
        """Run the ``z4`` admin CLI against this node; (exit code, stdout, stderr)."""
        done = subprocess.run(
            [sys.executable, "-m", "z4node.admin.cli", "--data", self.data_dir, *args],
            env=child_environment(), capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    def aws(self, *args, credentials=None, check=True, input=None):
        """Run the aws CLI (from this Python's environment) against the node;
        ``input`` (bytes) is its standard input."""
        access, secret = credentials or self.credentials()
        env = child_environment({
            "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1"})
        done = subprocess.run(
            [os.path.join(BIN, "aws"), "--endpoint-url", self.endpoint, *args],
            env=env, capture_output=True, timeout=600,
            input=input if input is not None else b"")
        done.stdout = done.stdout.decode("utf-8", "replace")
        done.stderr = done.stderr.decode("utf-8", "replace")
        if check and done.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done
