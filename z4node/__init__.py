"""z4node: a self-hosted, peer-to-peer, S3-compatible object store on Twisted.

The layers and who may call whom are described in ../shared/DESIGN.md:
``s3`` -> ``objects`` -> (``cluster``, ``storage``).
"""

__version__ = "0.1.0"
