"""``twistd z4node``: command-line options and the node's service tree.

The node runs on Twisted's asyncio reactor because the Kademlia DHT package
is asyncio based; :func:`makeService` installs that reactor itself when
twistd has not installed one yet, and refuses to start on any other.
"""

import os
import sys

from twisted.python import usage

from z4node.cluster.options import CLUSTER_OPTIONS, check_cluster_options

DEFAULT_S3_PORT = 9670


class ReactorError(Exception):
    """The node cannot run on the reactor twistd installed."""


def install_asyncio_reactor():
    """Install the asyncio reactor unless one is installed; return it.

    Raises :class:`ReactorError` when another reactor is already running the
    process: the DHT would silently never listen on it.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise ReactorError(
            "z4node needs Twisted's asyncio reactor (the DHT is asyncio based): "
            "run `twistd --reactor=asyncio z4node ...` or leave --reactor out"
        )
    return reactor


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run one z4node: the S3 API over HTTP plus cluster membership."

    optParameters = [
        ["port", "p", DEFAULT_S3_PORT, "TCP port of the S3 API.", int],
        ["host", None, "127.0.0.1", "Address the S3 API listens on."],
        ["data", "d", "./data", "Data directory (chunks, metadata, admin socket)."],
        ["id", None, None, "Node id (default: generated once, kept in the data dir)."],
        ["domain", None, None,
         "Domain(s) for virtual-host-style requests, comma separated: with "
         "s3.example.test, bucket.s3.example.test/key names bucket and key "
         "(default: $Z4_DOMAIN; path style always works)."],
    ] + CLUSTER_OPTIONS
    optFlags = [
        ["debug", None, "Log every request and background job step."],
    ]

    def postOptions(self):
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError("--port must be 0..65535")
        self["data"] = os.path.abspath(self["data"])
        # Bad cluster options are usage errors now, not a failed start later.
        check_cluster_options(self, self["host"])


def makeService(options):
    try:
        reactor = install_asyncio_reactor()
    except ReactorError as e:
        raise SystemExit(str(e))
    from z4node.node import Node

    return Node.from_options(reactor, options, os.environ)
