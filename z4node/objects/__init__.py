"""The object layer: buckets, object versions, multipart uploads and
listings, written against a placement (``z4node.objects.placement``) and
never against a disk or a peer directly.
"""
