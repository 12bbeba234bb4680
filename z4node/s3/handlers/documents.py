"""Reading the small request bodies that are not objects: the XML
documents that configure buckets and objects (versioning, tagging,
lifecycle, CORS, Object Lock, ACLs, encryption), DeleteObjects,
CompleteMultipartUpload, CreateBucket, and bucket policies: whole,
capped, and checked against the digests the client sent (payload SHA-256,
Content-MD5, x-amz-checksum-*) as uploads are, before a byte of them is
used. Every handler that reads a body reads it here."""

import hashlib

from z4node.s3 import integers
from z4node.s3.errors import S3Error


class _Digests:
    def __init__(self, md5):
        self.md5 = md5


def has_digest(headers):
    return "content-md5" in headers or any(
        name.startswith("x-amz-checksum-") or name == "x-amz-trailer" for name in headers)


async def read_body(api, call, require_digest=False, limit=None, too_large=None,
                    checksum_headers=True):
    """The (small) request body as bytes, with Content-MD5, x-amz-checksum-*
    and the SigV4 payload hash verified. S3 refuses some requests without a
    digest (``require_digest``): DeleteObjects and the configuration PUTs.
    Past ``limit`` bytes (default: the XML limit) ``too_large`` is raised
    (default: MalformedXML). ``checksum_headers``: as for
    ``S3Api.body_pipeline``."""
    if require_digest and not has_digest(call.headers):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
    if limit is None:
        limit = api.max_xml_body
    body, hashers, verify, _ = api.body_pipeline(call, checksum_headers)
    raw = bytearray()
    async for piece in body:
        raw += piece
        if len(raw) > limit:
            raise too_large or S3Error("MalformedXML", "The XML you provided was too large.")
    raw = bytes(raw)
    for hasher in hashers:
        hasher.update(raw)
    verify(_Digests(hashlib.md5(raw).digest()))
    return raw


async def read_document(api, call, root, require_digest=False, optional=False,
                        checksum_headers=True):
    """The body parsed as an XML document whose root must be ``root``
    (None for an empty body if the document is ``optional``)."""
    body = await read_body(api, call, require_digest, checksum_headers=checksum_headers)
    if optional and not body.strip():
        return None
    return await api.parse_xml(body, root)


def children(element, name):
    return element.findall(name)


def only(element, name):
    """The text of a child that may appear at most once (None if absent)."""
    found = element.findall(name)
    if len(found) > 1:
        raise S3Error("MalformedXML")
    return (found[0].text or "") if found else None


def integer(text, maximum=integers.INT32_MAX):
    """An XML integer of at most ``maximum`` in magnitude (a sign is
    allowed, so that callers can say why a negative one is refused), or
    MalformedXML."""
    text = (text or "").strip()
    number = integers.non_negative(text.removeprefix("-"), maximum)
    if number is None:
        raise S3Error("MalformedXML")
    return -number if text.startswith("-") else number
