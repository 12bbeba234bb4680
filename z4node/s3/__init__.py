"""The S3 protocol: HTTP resource tree, request routing, SigV4/SigV2
authentication, XML documents and S3 error responses.

It talks to the object layer (``z4node.objects``) only, never to a disk or a
peer directly.
"""
