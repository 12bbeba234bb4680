"""The three servers the benchmark compares, each started on a free
loopback port in a temp dir and stopped again, whatever happens.

- :class:`Z4Node`: ``twistd z4node`` from this checkout (via the tests'
  :class:`~tests.nodeprocess.NodeProcess`), one node, durable writes.
- :class:`Moto`: ``python -m moto.server``, the common Python S3 stand-in.
- :class:`Nginx`: nginx serving the objects as static files: GET and HEAD
  from files, PUT and DELETE through the dav module, LIST as the
  ``autoindex`` of a directory (the closest thing nginx has).

Each gives request targets for the same keys in the same shape: S3 paths
with a SigV4 presigned query (nginx ignores the query, so its requests are
as long as the others').
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil

from benchmarks.presign import Presigner
from tests.nodeprocess import NodeProcess, free_port

BUCKET = "bench"
LIST_PREFIX = "list/"


class Server:
    name = None
    durable = None  # a sentence for the report

    def __init__(self, workdir):
        self.workdir = os.path.join(workdir, self.name)
        os.makedirs(self.workdir)
        self.port = None
        self.presigner = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def object_target(self, method, key):
        return self.presigner.path(method, f"/{BUCKET}/{key}")

    def list_target(self):
        return self.presigner.path("GET", f"/{BUCKET}", {
            "list-type": "2", "prefix": LIST_PREFIX, "max-keys": "1000",
            "encoding-type": "url"})  # as boto3 sends it

    def list_count(self, body):
        return body.count(b"<Key>")

    def url(self, method, key):
        return self.endpoint + self.object_target(method, key)

    def processes(self):
        """The server's processes (for their peak RSS)."""
        raise NotImplementedError

    def peak_rss(self):
        """Sum of the kernel's peak resident set (VmHWM) of the processes."""
        total = 0
        for process in self.processes():
            with open(f"/proc/{process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total

    def log_tail(self):
        return ""


def _wait_http(url, process, timeout=30.0, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log()}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not answer {url} in {timeout} s:\n{log()}")


def _stop(process, sig=signal.SIGTERM, group=False):
    """Stop a process we started (its own session): ``sig``, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(10)


class _Case:
    """Stands in for a trial TestCase: the temp dirs and cleanups NodeProcess wants."""

    def __init__(self, root):
        self.root = root
        self.count = 0

    def mktemp(self):
        self.count += 1
        return os.path.join(self.root, f"node{self.count}")

    def addCleanup(self, fn, *args):
        pass  # Z4Node.stop() stops the node


class Z4Node(Server):
    name = "z4node"
    durable = "every PUT is fsynced (chunk file and directory, SQLite WAL) before its answer"

    def __init__(self, workdir):
        super().__init__(workdir)
        self.node = None

    def start(self):
        self.node = NodeProcess(_Case(self.workdir))
        self.node.start()
        self.port = self.node.port
        access, secret = self.node.credentials()
        self.presigner = Presigner(f"127.0.0.1:{self.port}", access, secret)
        self.node.client(signature_version="s3v4").create_bucket(Bucket=BUCKET)
        return self

    def processes(self):
        return [psutil.Process(self.node.process.pid)]

    def stop(self):
        if self.node is not None:
            self.node.stop()

    def log_tail(self):
        return self.node.log()[-4000:] if self.node else ""


class Moto(Server):
    name = "moto"
    durable = "objects are kept in memory (and spooled temp files); nothing is fsynced"
    access_key, secret_key = "AKIDBENCHMOTO", "moto-accepts-any-credentials"

    def __init__(self, workdir):
        super().__init__(workdir)
        self.process = None
        self.log_path = os.path.join(self.workdir, "moto.log")

    def start(self):
        self.port = free_port()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key,
                   AWS_SECRET_ACCESS_KEY=self.secret_key, AWS_DEFAULT_REGION="us-east-1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True)
        _wait_http(self.endpoint + "/moto-api/", self.process, log=self.log_tail)
        self.presigner = Presigner(f"127.0.0.1:{self.port}", self.access_key, self.secret_key)
        request = urllib.request.Request(
            self.endpoint + self.presigner.path("PUT", f"/{BUCKET}"), method="PUT")
        urllib.request.urlopen(request, timeout=10).read()
        return self

    def processes(self):
        return [psutil.Process(self.process.pid)]

    def stop(self):
        _stop(self.process)

    def log_tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


NGINX_CONF = """\
# Generated by benchmarks/servers.py for one benchmark run.
%(user)s
worker_processes auto;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        root %(dir)s/www;
        location / {
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }
        location /%(bucket)s/%(prefix)s {
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            autoindex on;
            autoindex_format xml;
        }
    }
}
"""


class Nginx(Server):
    name = "nginx"
    durable = ("PUT bodies go to a temp file that is renamed into place; "
               "nothing is fsynced")

    def __init__(self, workdir):
        super().__init__(workdir)
        self.process = None

    def start(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        os.makedirs(os.path.join(self.workdir, "www", BUCKET))
        os.makedirs(os.path.join(self.workdir, "body"))
        conf = os.path.join(self.workdir, "nginx.conf")
        user = ""
        if os.geteuid() == 0:
            # As root, nginx runs its workers as "nobody", who could not
            # write the temp dir; keep them as the user that made it.
            user = f"user {pwd.getpwuid(0).pw_name};"
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"user": user, "dir": self.workdir, "port": self.port,
                                  "bucket": BUCKET, "prefix": LIST_PREFIX})
        self.process = subprocess.Popen(
            [nginx, "-p", self.workdir, "-c", conf, "-e", os.path.join(self.workdir, "error.log"),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _wait_http(self.endpoint + "/", self.process, log=self.log_tail)
        # Same request shape as the S3 servers: nginx ignores the query.
        self.presigner = Presigner(f"127.0.0.1:{self.port}", "AKIDBENCHNGINX", "unused")
        return self

    def list_target(self):
        return self.presigner.path("GET", f"/{BUCKET}/{LIST_PREFIX}")

    def list_count(self, body):
        return body.count(b"<file ")

    def processes(self):
        master = psutil.Process(self.process.pid)
        return [master, *master.children()]

    def stop(self):
        # SIGTERM: fast shutdown of the master and its workers.
        _stop(self.process, group=True)

    def log_tail(self):
        try:
            with open(os.path.join(self.workdir, "error.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


SERVERS = {cls.name: cls for cls in (Z4Node, Moto, Nginx)}
