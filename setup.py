"""Packaging for z4node: the node package, its twistd plugin and the `z4` CLI."""

from setuptools import find_packages, setup

setup(
    name="z4node",
    version="0.1.0",
    description="Self-hosted, peer-to-peer, S3-compatible object store on Twisted",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py on purpose (Twisted's plugin layout):
    # it is listed by name so the plugin module is installed beside Twisted's.
    packages=find_packages(include=["z4node", "z4node.*"]) + ["twisted.plugins"],
    # The console's script and style sheet, which the node serves itself.
    package_data={"z4node.web": ["console.js", "console.css"]},
    install_requires=[
        "twisted[tls]>=24.7",
        # rich: the z4 command's progress bars (rate, ETA, redrawn in place
        # on a terminal) for long operations; a hand-made bar got each of
        # those wrong in its own way.
        "rich>=13",
        "txaio>=23.1",
        "pynacl>=1.5",
        "blake3>=0.4",
        "kademlia>=2.2",
        "treq>=23.11",
        "cryptography>=42",
        # defusedxml: S3 request bodies are untrusted XML; the stdlib parser
        # expands entities (billion laughs), defusedxml refuses them.
        "defusedxml>=0.7",
        # awscrt: AWS's own CRC32C and CRC64NVME implementations, used for the
        # x-amz-checksum-* values recent SDKs send; hand-written tables would
        # be slower and another thing to get wrong.
        "awscrt>=0.20",
        # multipart: a push parser for multipart/form-data, so a browser's
        # POST upload streams into the object layer instead of being held
        # whole (the stdlib has no streaming form parser). treq needs it too.
        "multipart>=1.1",
        # prometheus_client: /metrics in the exposition format Prometheus
        # parses, from collectors read at scrape time, with its process
        # collector (RSS, open fds) instead of a hand-written one.
        "prometheus_client>=0.17",
    ],
    entry_points={"console_scripts": ["z4=z4node.admin.cli:main"]},
)
