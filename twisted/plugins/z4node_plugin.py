"""The twistd entry point: ``twistd z4node``. Options and the service tree
live in :mod:`z4node.tap`; this module only names them (Twisted's plugin
layout), and must not import the reactor.
"""

from twisted.application.service import ServiceMaker

z4node = ServiceMaker(
    "z4node",
    "z4node.tap",
    "A peer-to-peer, S3-compatible object store node",
    "z4node",
)
