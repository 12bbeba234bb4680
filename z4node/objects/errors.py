"""Failures of the object layer, named with S3's error codes (the object
layer models S3's semantics); the S3 layer turns them into error documents
in one place (``z4node.s3.errors``)."""


class ObjectError(Exception):
    """An object operation refused for a reason the client can be told."""

    def __init__(self, code, message=None):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}" if message else code)
