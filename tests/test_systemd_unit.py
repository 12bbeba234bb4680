"""etc/z4node.service: systemd accepts it (``systemd-analyze verify``,
installed by .ci/run), it is hardened, it waits for the node's READY=1,
and the command it runs is one the node accepts."""

import os
import shlex
import shutil
import subprocess

from twisted.trial import unittest

from tests.nodeprocess import BIN, SOURCE_ROOT
from z4node.tap import DEFAULT_MAX_CONNECTIONS, Options

UNIT = os.path.join(SOURCE_ROOT, "etc", "z4node.service")
ENV_FILE = os.path.join(SOURCE_ROOT, "etc", "z4node.env")
INSTALLED_TWISTD = "/opt/z4node/bin/twistd"


def read_unit(path):
    """{key: [values]} of the [Service] section (continued lines joined)."""
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    section, values = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def read_env_file(path):
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f
                    if line.strip() and not line.startswith("#"))


class UnitTests(unittest.TestCase):
    def setUp(self):
        self.service = read_unit(UNIT)

    def value(self, key):
        self.assertIn(key, self.service)
        return self.service[key][-1]

    def node_options(self):
        """ExecStart's z4node arguments, parsed by the node's own Options."""
        command = self.value("ExecStart")
        for name, value in read_env_file(ENV_FILE).items():
            command = command.replace("${%s}" % name, value)
        words = shlex.split(command)
        self.assertEqual(words[0], INSTALLED_TWISTD)
        options = Options()
        options.parseOptions(words[words.index("z4node") + 1:])
        return options

    def test_systemd_analyze_verify(self):
        """systemd-analyze verify passes, without a warning. It insists that
        ExecStart exists, so the copy verified runs this venv's twistd."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed (.ci/run "
                                    "installs Debian's systemd package)")
        # An absolute path: systemd reads a bare name as a unit to look up.
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        copy = os.path.join(directory, "z4node.service")
        with open(UNIT) as f:
            text = f.read()
        self.assertIn(INSTALLED_TWISTD, text)
        with open(copy, "w") as f:
            f.write(text.replace(INSTALLED_TWISTD, os.path.join(BIN, "twistd")))
        done = subprocess.run([analyze, "verify", copy], capture_output=True, text=True,
                              timeout=120, cwd=directory)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))

    def test_readiness_and_reload(self):
        self.assertEqual(self.value("Type"), "notify")
        self.assertEqual(self.value("NotifyAccess"), "main")
        self.assertEqual(self.value("ExecReload"), "/bin/kill -HUP $MAINPID")

    def test_hardened(self):
        for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "true"),
                           ("PrivateTmp", "true"), ("ProtectHome", "true"),
                           ("CapabilityBoundingSet", "")]:
            self.assertEqual(self.value(key), value, key)
        data = self.node_options()["data"]
        writable = self.value("ReadWritePaths").split()
        self.assertTrue(any(data == path or data.startswith(path.rstrip("/") + "/")
                            for path in writable), (data, writable))

    def test_descriptors_cover_clients_and_peers(self):
        """LimitNOFILE holds --max-connections plus 4 descriptors per peer
        for 256 peers plus 100 of the node's own."""
        connections = self.node_options()["max-connections"]
        self.assertGreaterEqual(connections, DEFAULT_MAX_CONNECTIONS)
        self.assertGreaterEqual(int(self.value("LimitNOFILE")), connections + 4 * 256 + 100)

    def test_stop_waits_for_the_drain(self):
        """systemd's SIGKILL comes well after the node's own --stop-timeout."""
        stop_timeout = self.node_options()["stop-timeout"]
        self.assertEqual(self.value("KillSignal"), "SIGTERM")
        self.assertGreaterEqual(float(self.value("TimeoutStopSec")), stop_timeout + 20)
