"""Real ``twistd z4node`` processes for integration tests.

A :class:`NodeProcess` runs the node from this checkout on a free loopback
port with its own data dir, waits until it answers ``/_z4/ping``, and is
stopped (SIGTERM, then SIGKILL) by the test's cleanup. Clients made here
talk only to 127.0.0.1. With ``tls=True`` the node serves HTTPS with a
fresh self-signed certificate for 127.0.0.1, which its clients trust.
"""

import configparser
import datetime
import ipaddress
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import z4node

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(z4node.__file__)))
BIN = os.path.dirname(sys.executable)


# Ports handed out in this process: nodes of one test are built before any
# of them binds, so a port must not be chosen twice.
_handed_out = set()
_rng = random.Random()


def _ephemeral_range():
    """The range the kernel takes outgoing connections' ports from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port, kind):
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind=socket.SOCK_STREAM, *also):
    """A port free on 127.0.0.1 for ``kind`` (and each socket kind in
    ``also``), never handed out before in this process, and outside the
    kernel's range for outgoing connections: a port bound to 0 comes from
    that range, and a client connection (boto3, the peer channel) once took
    one before the node it was meant for could bind it."""
    low, high = _ephemeral_range()
    candidates = range(10000, low) if low > 12000 else range(high + 1, 65536)
    while True:
        port = _rng.choice(candidates)
        if port not in _handed_out and all(_bindable(port, k) for k in (kind, *also)):
            _handed_out.add(port)
            return port


def free_gossip_port():
    """A port number free on 127.0.0.1 for both UDP (SWIM) and TCP (the
    peer channel, which listens at the gossip port number)."""
    return free_port(socket.SOCK_DGRAM, socket.SOCK_STREAM)


def self_signed_certificate(directory):
    """(cert path, key path) of a new self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "tls-cert.pem")
    key_path = os.path.join(directory, "tls-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


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

    def __init__(self, testcase, data_dir=None, port=None, env=None, args=(), tls=False):
        self.data_dir = os.path.abspath(data_dir or testcase.mktemp())
        os.makedirs(self.data_dir, exist_ok=True)
        # (cert, key) paths, kept beside the data dir, never inside it.
        if tls is True:
            tls = self_signed_certificate(self.data_dir + ".tls")
        self.tls = tls or None
        self.port = port or free_port()
        # The cluster's UDP ports: never the defaults, so that nodes of
        # concurrent tests do not answer each other's gossip.
        self.gossip_port = free_gossip_port()
        self.dht_port = free_port(socket.SOCK_DGRAM)
        self.env = env or {}
        self.args = list(args)
        if self.tls:
            self.args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        self.process = None
        self.log_path = self.data_dir + ".log"
        testcase.addCleanup(self.stop)

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

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
                context = ssl.create_default_context(cafile=self.tls[0]) if self.tls else None
                urllib.request.urlopen(self.endpoint + "/_z4/ping", timeout=1,
                                       context=context).read()
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
            verify=self.tls[0] if self.tls else None,
            config=Config(retries={"max_attempts": 1}, **config))

    def z4(self, *args, env=None):
        """Run the ``z4`` admin CLI against this node; (exit code, stdout, stderr)."""
        done = subprocess.run(
            [sys.executable, "-m", "z4node.admin.cli", "--data", self.data_dir, *args],
            env=child_environment(env), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout, done.stderr

    def aws(self, *args, credentials=None, check=True, input=None):
        """Run the aws CLI (from this Python's environment) against the node;
        ``input`` (bytes) is its standard input."""
        access, secret = credentials or self.credentials()
        env = child_environment({
            "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1"})
        tls = ["--ca-bundle", self.tls[0]] if self.tls else []
        done = subprocess.run(
            [os.path.join(BIN, "aws"), "--endpoint-url", self.endpoint, *tls, *args],
            env=env, capture_output=True, timeout=600,
            input=input if input is not None else b"")
        done.stdout = done.stdout.decode("utf-8", "replace")
        done.stderr = done.stderr.decode("utf-8", "replace")
        if check and done.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done
