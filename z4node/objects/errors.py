"""Failures of the object layer, named with S3's error codes (the object
layer models S3's semantics); the S3 layer turns them into error documents
in one place (``z4node.s3.errors``)."""


class ObjectError(Exception):
    """An object operation refused for a reason the client can be told.

    ``version`` is the version the refusal is about when that matters to
    the client (a delete marker: S3 names it in the response headers);
    ``argument`` is ``(name, value)`` for InvalidArgument.
    """

    def __init__(self, code, message=None, *, version=None, argument=None):
        self.code = code
        self.message = message
        self.version = version
        self.argument = argument
        super().__init__(f"{code}: {message}" if message else code)
