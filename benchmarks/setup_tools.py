"""Install what the benchmark needs on a fresh machine (Debian, Python 3.11
and pip): wrk, nginx and curl from Debian's packages, moto's server and
the project's own dependencies from PyPI into the running Python.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEBIAN = {"wrk": "wrk", "nginx": "nginx", "curl": "curl"}
# Modules the runner or the node imports -> what pip installs for them.
PYTHON = {
    "boto3": "boto3", "psutil": "psutil", "moto.server": "moto[server]",
    "flask": "moto[server]", "flask_cors": "moto[server]",
    "twisted": ROOT, "nacl": ROOT, "blake3": ROOT, "kademlia": ROOT, "treq": ROOT,
    "defusedxml": ROOT, "awscrt": ROOT, "txaio": ROOT,
}


def _which(tool):
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def ensure_debian():
    missing = sorted({package for tool, package in DEBIAN.items() if _which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"the benchmark needs Debian's {' '.join(missing)}: "
                 f"apt-get install {' '.join(missing)} (as root), then run it again")
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
    # A package's install script would start nginx as a system service on
    # port 80; the benchmark starts its own, so keep dpkg from starting any.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env)
    finally:
        if made_policy:
            os.unlink(policy)


def _missing_modules():
    missing = set()
    for module, requirement in PYTHON.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.add(requirement)
    return missing


def ensure_python():
    missing = _missing_modules()
    if not missing:
        return
    print(f"installing {' '.join(sorted(missing))} with pip into {sys.prefix}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *sorted(missing)], check=True)
    importlib.invalidate_caches()
    still = _missing_modules()
    if still:
        sys.exit(f"pip did not provide {' '.join(sorted(still))}")


def ensure_py_spy():
    if shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy"):
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)


def ensure_all():
    ensure_debian()
    ensure_python()
