"""A seeded fuzzer of a running node's HTTP surface, for tests/test_fuzz.py.

This module makes requests and judges the answers; it starts no node
(``tests/nodeprocess.py`` does) and only ever talks to 127.0.0.1.

Every case is a valid request with one mutation (sometimes none, sometimes
two), so that each failure it reports is close to minimal:

- signed: SigV4 with the node's admin key and a valid signature over the
  mutated request (headers, query parameters, keys, paths, XML and JSON
  bodies, aws-chunked bodies, browser POST forms);
- unsigned, and wrongly signed (the signature, key, date, or a signed part
  of the request changed after signing);
- raw HTTP written to a socket (broken request lines, headers, framing);
- slow clients that trickle a request in while the other cases run.

The invariants, checked on every answer (:meth:`Fuzzer.judge`) or batch:

- no 5xx except 501 and 503; each 500 is classified by the traceback the
  node logged for its request id;
- every 4xx, 501 and 503 of the S3 surface carries an ``<Error><Code>``
  document that an XML parser accepts (HEAD answers have no body; the
  HTTP layer's own ``400 Bad Request`` to bytes that are not an HTTP
  request has none either, and ``/_z4/`` answers are JSON);
- no unsigned or wrongly signed request succeeds at a write;
- every complete request gets an answer within ``answer_timeout``;
- after each batch, the node answers ``/_z4/ping`` and its log holds no
  error that no 500 explains;
- at the end, the sentinel objects (written first, never written again by
  a valid signature) read back identical, and nothing else is in their
  bucket.

Only the seeded ``random.Random`` decides what is sent; the answers never
change which random numbers are drawn, so a seed replays the same cases
(upload ids and dates aside).
"""

import base64
import collections
import datetime
import hashlib
import http.client
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from botocore.exceptions import ClientError

from tests import s3http, signing

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'

# Buckets the fuzzer writes to with valid signatures (and may grant anyone
# anything); the sentinel bucket gets only reads with a valid signature.
PLAIN, VERSIONED, LOCKED = "fz-plain", "fz-versioned", "fz-locked"
FUZZ_BUCKETS = (PLAIN, VERSIONED, LOCKED)
SENTINEL_BUCKET = "fz-sentinel"
# Names CreateBucket and DeleteBucket cycle through.
NEW_BUCKETS = tuple(f"fz-new-{i}" for i in range(6))
BASE_KEYS = ("k", "dir/sub/obj.txt", "sp ace+plus", "ünï/😀")
WRITES = frozenset({"PUT", "POST", "DELETE"})

# -- value pools: what a mutation puts where --------------------------------

NUMBERS = ["", " ", "0", "1", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10", "NaN",
           "²", "١٢", "𝟗", "٣٣", "10000", "2147483648", str(2 ** 63), str(2 ** 64),
           "9" * 30, "9" * 5000, "abc", "1,2"]
DATES = ["2030-01-01T00:00:00Z", "2030-01-01T00:00:00.000Z", "9999-12-31T23:59:59Z",
         "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "10000-01-01T00:00:00Z",
         "2030-02-30T00:00:00Z", "2030-01-01", "2030-01-01T25:00:00Z",
         "2030-01-01T00:00:00+99:00", "yesterday", "", "1" * 400]
HTTP_DATES = ["Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
              "Mon, 01 Jan 0001 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 +9999",
              "not a date", "", "2030-01-01T00:00:00Z", "Thu, 01 Jan 1970 00:00:00 GMT"]
TEXT = ["", " ", "x", "a" * 300, "a" * 3000, "é", "😀", "\u202e", "\ufeff", "\x01\x1f",
        "\x7f", "<", "&amp;", "]]>", "%", "%00", "%ZZ", "../..", "null", "true",
        "Enabled", "GOVERNANCE", "COMPLIANCE", "*", "'\"", "\\"]
KEYS = ["k", "a/b", "/", "//", ".", "..", "../k", "./k", "sp ace", "+", "%", "%2F",
        "?", "#", "&", "\x00", "\x01", "\x1f", "tab\tnl\ncr\r", "\x7f", "é", "😀",
        "\ud7ff", "\uffff", "\ufffe", "a" * 1024, "é" * 513, "a" * 1025, "<&>", "]]>"]
VERSION_IDS = ["null", "", "0" * 26, "z" * 26, "1", "-1", "0" * 25, "Z" * 32,
               "00000000000000000000000001", "%", "é"]
DIGESTS = ["", "AAAA", "not base64!", "AAAAAAAAAAAAAAAAAAAAAA==", "é" * 8, "😀",
           base64.b64encode(b"\x00" * 32).decode(), "=" * 24, "a" * 100]
RANGES = ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-1", "bytes=²-3",
          "bytes=0-²", "bytes=-²", "bytes=" + "9" * 5000 + "-", "bytes=0-1,3-4",
          "bytes=-", "bytes=a-b", "items=0-1", "bytes= 0 - 1", "bytes=0-" + str(2 ** 64), ""]
ETAGS = ['"x"', "*", "", '"' + "f" * 32 + '"', "W/\"x\"", '"a", "b"', "é"]
ORIGINS = ["https://example.test", "null", "*", "", "é", "http://" + "a" * 300]
INTERESTING_VALUES = {
    "range": RANGES,
    "if-match": ETAGS, "if-none-match": ETAGS,
    "if-modified-since": HTTP_DATES, "if-unmodified-since": HTTP_DATES,
    "content-md5": DIGESTS,
    "x-amz-checksum-crc32": DIGESTS, "x-amz-checksum-crc32c": DIGESTS,
    "x-amz-checksum-sha1": DIGESTS, "x-amz-checksum-sha256": DIGESTS,
    "x-amz-checksum-crc64nvme": DIGESTS,
    "x-amz-checksum-algorithm": ["CRC32", "SHA256", "crc32", "MD5", "", "é"],
    "x-amz-sdk-checksum-algorithm": ["CRC32", "SHA1", "x"],
    "x-amz-decoded-content-length": NUMBERS,
    "x-amz-max-parts": NUMBERS, "x-amz-part-number-marker": NUMBERS,
    "x-amz-object-attributes": ["ETag", "ETag,Checksum,ObjectParts,StorageClass,ObjectSize",
                                "x", "", "ObjectParts,ObjectParts"],
    "x-amz-copy-source": [f"/{PLAIN}/k", f"{PLAIN}/k?versionId=null", f"{PLAIN}/k?versionId=" + "0" * 26,
                          f"/{SENTINEL_BUCKET}/plain.txt", "/", "", "%ZZ", f"/{PLAIN}/%00",
                          f"/{PLAIN}/" + "a" * 2000, "/nobucket/k", f"/{PLAIN}/k?partNumber=²"],
    "x-amz-copy-source-range": RANGES,
    "x-amz-copy-source-if-match": ETAGS,
    "x-amz-copy-source-if-modified-since": HTTP_DATES,
    "x-amz-metadata-directive": ["COPY", "REPLACE", "x", ""],
    "x-amz-tagging-directive": ["COPY", "REPLACE", "x"],
    "x-amz-tagging": ["a=b", "a=b&c=d", "a", "=", "&&", "%ZZ=1", "a" * 200 + "=b",
                      "&".join(f"k{i}=v" for i in range(11)), "é=😀", "a=b&a=c"],
    "x-amz-meta-fuzz": TEXT,
    "x-amz-acl": ["private", "public-read", "public-read-write", "bucket-owner-full-control",
                  "x", ""],
    "x-amz-grant-read": ['id="x"', 'uri="http://acs.amazonaws.com/groups/global/AllUsers"',
                         "emailAddress=a@b", "x", 'id=""', ""],
    "x-amz-grant-full-control": ['id="x"', "x"],
    "x-amz-server-side-encryption": ["AES256", "aws:kms", "aws:kms:dsse", "x", ""],
    "x-amz-server-side-encryption-customer-algorithm": ["AES256", "x", ""],
    "x-amz-server-side-encryption-customer-key": DIGESTS,
    "x-amz-server-side-encryption-customer-key-md5": DIGESTS,
    "x-amz-storage-class": ["STANDARD", "GLACIER", "x", ""],
    "x-amz-object-lock-mode": ["GOVERNANCE", "COMPLIANCE", "x", ""],
    "x-amz-object-lock-retain-until-date": DATES,
    "x-amz-object-lock-legal-hold": ["ON", "OFF", "x"],
    "x-amz-bypass-governance-retention": ["true", "false", "yes", ""],
    "x-amz-bucket-object-lock-enabled": ["true", "false", "x"],
    "x-amz-object-ownership": ["BucketOwnerEnforced", "ObjectWriter", "x"],
    "x-amz-expected-bucket-owner": ["123456789012", "x", ""],
    "x-amz-request-payer": ["requester", "x"],
    "x-amz-website-redirect-location": ["/x", "http://e.test", "x"],
    "x-amz-mfa": ["a b", "x"],
    "x-amz-trailer": ["x-amz-checksum-crc32", "x", ""],
    "x-amz-write-offset-bytes": NUMBERS,
    "content-type": ["text/plain", "", "multipart/form-data", "é", "a" * 2000],
    "content-encoding": ["gzip", "aws-chunked", "aws-chunked,gzip", "x", ""],
    "content-language": TEXT, "cache-control": TEXT, "content-disposition": TEXT,
    "expires": HTTP_DATES,
    "origin": ORIGINS,
    "access-control-request-method": ["GET", "PUT", "x", ""],
    "access-control-request-headers": ["x-amz-meta-a", "a,b,,c", "é"],
    "x-forwarded-proto": ["https", "x"],
    "expect": ["100-continue", "x"],
}
QUERY_VALUES = {
    "versionId": VERSION_IDS, "partNumber": NUMBERS, "uploadId": ["", "x", "0" * 32, "é"],
    "max-keys": NUMBERS, "max-parts": NUMBERS, "max-uploads": NUMBERS,
    "part-number-marker": NUMBERS, "list-type": ["1", "2", "3", ""],
    "prefix": KEYS, "delimiter": KEYS, "marker": KEYS, "start-after": KEYS,
    "continuation-token": ["", "x", "%ZZ", "AAAA", "é", "a" * 2000],
    "encoding-type": ["url", "", "x"], "fetch-owner": ["true", "x"],
    "key-marker": KEYS, "version-id-marker": VERSION_IDS, "upload-id-marker": ["", "x"],
    "response-content-type": TEXT, "response-content-disposition": TEXT,
    "response-expires": HTTP_DATES, "response-cache-control": TEXT,
    "x-id": ["GetObject", "x"], "attributes": [""], "acl": [""], "tagging": [""],
    "versioning": [""], "cors": [""], "lifecycle": [""], "object-lock": [""],
    "retention": [""], "legal-hold": [""], "uploads": [""], "delete": [""],
    "versions": [""], "location": [""], "policy": [""], "policyStatus": [""],
    "encryption": [""], "ownershipControls": [""], "website": [""], "select": [""],
    "select-type": ["2"], "torrent": [""], "restore": [""], "notification": [""],
    "X-Amz-Expires": NUMBERS, "X-Amz-Date": ["", "x", "20300101T000000Z"],
    "X-Amz-Algorithm": ["AWS4-HMAC-SHA256", "x"], "X-Amz-Credential": ["x", "a/b/c/d/e"],
    "X-Amz-Signature": ["x"], "X-Amz-SignedHeaders": ["host"], "AWSAccessKeyId": ["x"],
    "Signature": ["x"], "Expires": NUMBERS,
}
# Headers SigV4 lets a client leave unsigned (every x-amz-* must be signed),
# with values whose ISO-8859-1 bytes are what the node reads: '²' is one
# byte, 0xB2, and a digit to str.isdigit().
LATIN_DIGITS = ["²", "³", "¹", "¹²³", "1²", "é", "\xff\xfe", "\xa0"]
LATE_HEADERS = {
    "range": ["bytes=²-3", "bytes=0-³", "bytes=-¹", "bytes=1²-", "bytes=\xa01-2"],
    "if-match": LATIN_DIGITS, "if-none-match": LATIN_DIGITS,
    "if-modified-since": ["Wed, 21 Oct 2015 07:28:00 GM\xff", "Wed, ²1 Oct 2015 07:28:00 GMT"],
    "if-unmodified-since": ["Wed, 21 Oct ²015 07:28:00 GMT"],
    "content-md5": LATIN_DIGITS, "content-type": LATIN_DIGITS, "origin": LATIN_DIGITS,
    "cache-control": LATIN_DIGITS, "content-disposition": LATIN_DIGITS,
    "access-control-request-method": LATIN_DIGITS,
}
# Paths sent exactly as written (ASCII: http.client sends nothing else).
RAW_PATHS = [f"/{PLAIN}/%ZZ", f"/{PLAIN}/%C3%28", f"/{PLAIN}/%00", f"/{PLAIN}/%01%7F",
             f"//{PLAIN}", f"/{PLAIN}//k", f"/{PLAIN}/./k", f"/{PLAIN}/../{SENTINEL_BUCKET}/k",
             "/%66z-plain/k", "/FZ-PLAIN/k", f"/{PLAIN}/k%2Fsub", f"/{PLAIN}/" + "%41" * 1100,
             "/" + "b" * 64, "/-bucket-/k", "/a..b/k", "/192.168.0.1/k", f"/{PLAIN}/k;x=y",
             f"/{PLAIN}/k%", f"/{PLAIN}/%E2%80%AE", "/_z4", "/_z4/", "/_z4/rpc/pushpull",
             "/%5Fz4/ping", "/?", "/&"]
XML_ENCODINGS = ["bogus-encoding", "utf-7", "UTF-16", "ebcdic-cp-us", "latin-1", "ascii",
                 "x" * 300, ""]
# Tags whose text is a number, a date or a key: their mutations draw from
# the matching pool.
NUMBER_TAGS = {"Days", "NoncurrentDays", "NewerNoncurrentVersions", "DaysAfterInitiation",
               "PartNumber", "MaxAgeSeconds", "Years", "ObjectSizeGreaterThan",
               "ObjectSizeLessThan"}
DATE_TAGS = {"RetainUntilDate", "Date"}
KEY_TAGS = {"Key", "Prefix", "Value", "ID", "VersionId", "AllowedOrigin", "ETag"}

Z4_PATHS = ["/_z4/ping", "/_z4/peers", "/_z4/ring", "/_z4/ring?key=k&n=%C2%B2", "/_z4/ring?key=k&n=" + "9" * 5000,
            "/_z4/ring?key=%FF", "/_z4/status", "/_z4/providers/" + "a" * 64,
            "/_z4/providers/%FF", "/_z4/providers/", "/_z4/rpc/pushpull", "/_z4/rpc/nope",
            "/_z4/nope", "/_z4/ping/extra", "/_z4/rpc/pushpull?x=1"]


# -- cases and findings -----------------------------------------------------

@dataclass
class Case:
    kind: str                 # signed, unsigned, badsig, raw, slow
    operation: str            # the S3 operation (or raw:what) it aims at
    mutation: str = "none"    # what was changed, for humans
    method: str = "GET"
    target: str = "/"         # path and query, exactly as sent
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    raw: bytes = None         # raw cases: the bytes written to the socket
    # Raw cases whose request is incomplete (the client goes away): the
    # node owes them no answer.
    answer_expected: bool = True
    # How the request is signed: x-amz-content-sha256 if not the body's
    # digest; the aws-chunked body's ingredients; the wrong-signature kind.
    payload_hash: str = None
    # Headers added after signing, sent as ISO-8859-1 bytes.
    late_headers: dict = None
    chunked: tuple = None
    badsig: str = None

    @property
    def s3(self):
        """Whether S3 answers it: ``/_z4/`` answers (JSON) are the node's own."""
        return not unquote(self.target).startswith("/_z4")

    def longest_line(self):
        """The longest request or header line (Twisted drops connections
        with lines over 16 KiB)."""
        if self.raw is not None:
            return max(len(line) for line in self.raw.split(b"\r\n"))
        return max([len(self.target)] + [len(k) + len(str(v)) + 2 for k, v in self.headers.items()])

    def repro(self, limit=400):
        """One line that sends this request again (with tests/s3http.py)."""
        if self.raw is not None:
            cut = "" if self.answer_expected else ", shutdown_write=True"
            return f"s3http.raw_exchange(node, {_short(self.raw, limit)}{cut})"
        signed = self.kind in ("signed", "slow", "chunked") and self.operation != "PostObject"
        line = (f"s3http.request(node, {self.method!r}, {_short(self.target, limit)}, "
                f"headers={_short(self.headers, limit)}, body={_short(self.body, limit)}, "
                f"signed={signed}, utf8_headers=True)")
        if self.payload_hash:
            line += f"  # payload_hash={self.payload_hash!r}"
        if self.late_headers:
            late = {k: v.encode("latin-1") for k, v in self.late_headers.items()}
            line += f"  # then unsigned: {late!r}"
        if self.kind == "badsig":
            line += f"  # then: {self.mutation}"
        return line


def _short(value, limit):
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[:limit] + f"...<{len(text)} chars>"


@dataclass
class Finding:
    """One class of failure: how often it happened and the first example."""
    name: str
    status: object
    case: Case
    detail: str
    count: int = 1
    operations: set = field(default_factory=set)

    def describe(self):
        return (f"[{self.count}x] {self.name}\n"
                f"    status {self.status}, operation {self.case.operation} "
                f"({self.case.kind}), mutation: {self.case.mutation}\n"
                f"    operations seen: {', '.join(sorted(self.operations))}\n"
                f"    detail: {_short(self.detail, 300)}\n"
                f"    repro: {self.case.repro()}")


# -- documents ----------------------------------------------------------------
# An XML document is a tree of (tag, text) and (tag, [children]) pairs. The
# tag may carry attributes after a space ("Grantee xsi:type=..."); a Markup
# text goes out as it is.

class Markup(str):
    pass


def to_xml(node, root=True, namespace=True):
    tag, content = node
    name = tag.split(" ", 1)[0]
    attributes = f' xmlns="{S3_XMLNS}"' if root and namespace else ""
    if isinstance(content, list):
        inner = "".join(to_xml(child, False) for child in content)
    else:
        inner = content if isinstance(content, Markup) else escape(content)
    return f"<{tag}{attributes}>{inner}</{name}>"


def _nodes(tree, path=()):
    """Every (path, node) of a tree, a path being child indexes from the root."""
    yield path, tree
    if isinstance(tree[1], list):
        for i, child in enumerate(tree[1]):
            yield from _nodes(child, path + (i,))


def _replace(tree, path, new):
    """``tree`` with the node at ``path`` replaced by the list ``new``
    (empty: removed; several: repeated)."""
    if not path:
        return new[0]
    tag, children = tree
    i = path[0]
    if len(path) == 1:
        return (tag, children[:i] + new + children[i + 1:])
    return (tag, children[:i] + [_replace(children[i], path[1:], new)] + children[i + 1:])


def mutate_tree(rng, tree):
    """(new tree, description): one structural or textual change."""
    nodes = list(_nodes(tree))
    path, node = rng.choice(nodes)
    tag = node[0].split(" ", 1)[0]
    what = rng.choice(["text", "text", "text", "drop", "repeat", "extra", "rename", "nest"])
    if what == "text" or (what in ("drop", "repeat") and not path):
        leaves = [(p, n) for p, n in nodes if not isinstance(n[1], list)] or nodes
        path, node = rng.choice(leaves)
        tag = node[0].split(" ", 1)[0]
        pool = (NUMBERS if tag in NUMBER_TAGS else DATES if tag in DATE_TAGS
                else KEYS if tag in KEY_TAGS else TEXT)
        value = rng.choice(pool)
        return _replace(tree, path, [(node[0], value)]), f"<{tag}> = {value!r}"
    if what == "drop":
        return _replace(tree, path, []), f"drop <{tag}>"
    if what == "repeat":
        times = rng.choice([2, 3, 101, 1001])
        return _replace(tree, path, [node] * times), f"<{tag}> x{times}"
    if what == "extra":
        extra = rng.choice([("Bogus", "x"), (tag, "x"), ("Rule", []), ("Key", "k")])
        if isinstance(node[1], list):
            return _replace(tree, path, [(node[0], node[1] + [extra])]), \
                f"<{tag}> gains <{extra[0]}>"
        return _replace(tree, path, [(node[0], [extra])]), f"<{tag}> holds <{extra[0]}>"
    if what == "rename":
        new = rng.choice(["Bogus", tag.lower(), tag + "s", "Error"])
        return _replace(tree, path, [(new, node[1])]), f"<{tag}> renamed <{new}>"
    depth = rng.choice([50, 5000])
    nested = ("Bogus", Markup("<Bogus>" * depth + "</Bogus>" * depth))
    return _replace(tree, path, [nested]), f"<{tag}> replaced by {depth} nested elements"


def mutate_xml_bytes(rng, body):
    """(new body, description): a change below the element level."""
    what = rng.choice(["encoding", "encoding", "truncate", "doctype", "bad-utf8", "utf16",
                       "empty", "bom", "namespace", "huge", "comment"])
    if what == "encoding":
        encoding = rng.choice(XML_ENCODINGS)
        return (f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + body,
                f"declared encoding {encoding!r}")
    if what == "truncate":
        at = rng.randrange(len(body))
        return body[:at], f"cut at byte {at}"
    if what == "doctype":
        doctype = rng.choice([
            b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
            b'<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
            b'<!DOCTYPE d SYSTEM "http://127.0.0.1:1/x.dtd">'])
        return doctype + body, "DOCTYPE added"
    if what == "bad-utf8":
        at = rng.randrange(len(body) + 1)
        return body[:at] + b"\xff\xc3(" + body[at:], f"invalid UTF-8 at byte {at}"
    if what == "utf16":
        return body.decode("utf-8").encode("utf-16"), "UTF-16 encoded"
    if what == "empty":
        return b"", "empty body"
    if what == "bom":
        return b"\xef\xbb\xbf" + body, "UTF-8 BOM"
    if what == "namespace":
        return body.replace(S3_XMLNS.encode(), b"urn:bogus", 1), "foreign namespace"
    if what == "huge":
        return body + b" " * (3 * 1024 * 1024), "3 MiB of trailing spaces"
    return body.replace(b">", b"><!-- c --><?pi x?>", 1), "comment and PI inserted"


def mutate_json(rng, document):
    """(new body, description) of a JSON document (a bucket policy)."""
    what = rng.choice(["leaf", "leaf", "drop", "bytes", "deep", "type"])
    if what == "bytes":
        text = json.dumps(document).encode()
        at = rng.randrange(len(text))
        return rng.choice([text[:at], text[:at] + b"\xff" + text[at:], b"", b"null"]), \
            f"bytes broken at {at}"
    if what == "deep":
        depth = rng.choice([100, 100000])
        return b"[" * depth + b"]" * depth, f"{depth} nested arrays"
    paths = []

    def walk(value, path):
        paths.append(path)
        if isinstance(value, dict):
            for name in value:
                walk(value[name], path + (name,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path + (i,))
    walk(document, ())
    path = rng.choice(paths[1:])
    copy = json.loads(json.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if what == "drop":
        del parent[path[-1]]
        return json.dumps(copy).encode(), f"drop {path}"
    value = rng.choice([None, True, 1e308, 10 ** 400, -1, [], {}, "", "\x00", "é",
                        "*", "arn:aws:s3:::*", "a" * 5000, ["*"] * 1000]
                       if what == "type" else TEXT + NUMBERS + DATES)
    parent[path[-1]] = value
    return json.dumps(copy).encode(), f"{path} = {_short(value, 60)}"


# -- the generator ------------------------------------------------------------

@dataclass
class Request:
    """A valid request, before its mutation."""
    method: str
    bucket: str = None
    key: str = None
    query: list = field(default_factory=list)   # [(name, value or None)]
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    xml: tuple = None        # the body as a tree, for body mutations
    json: object = None      # the body as JSON, likewise
    digest: bool = False     # send Content-MD5 of the (mutated) body


class Generator:
    """Turns a seeded RNG into cases. ``state`` holds what the node made
    (upload ids, part ETags, the owner id): it changes the bytes sent, never
    which random numbers are drawn."""

    def __init__(self, rng, state):
        self.rng = rng
        self.state = state
        self.templates = [
            (name[len("op_"):], getattr(self, name)) for name in sorted(dir(self))
            if name.startswith("op_")]

    # The request templates: one per operation, each valid as it comes.

    def bucket(self):
        return self.rng.choice(FUZZ_BUCKETS)

    def key(self):
        # Mostly the key every batch puts back: operations on an existing
        # object get further.
        return self.rng.choice((BASE_KEYS[0],) * len(BASE_KEYS) + BASE_KEYS)

    def op_ListBuckets(self):
        return Request("GET")

    def op_CreateBucket(self):
        request = Request("PUT", self.rng.choice(NEW_BUCKETS + FUZZ_BUCKETS))
        if self.rng.random() < 0.5:
            request.xml = ("CreateBucketConfiguration", [("LocationConstraint", "us-east-1")])
        return request

    def op_DeleteBucket(self):
        return Request("DELETE", self.rng.choice(NEW_BUCKETS + FUZZ_BUCKETS))

    def op_HeadBucket(self):
        return Request("HEAD", self.bucket())

    def op_GetBucketLocation(self):
        return Request("GET", self.bucket(), query=[("location", None)])

    def op_ListObjects(self):
        return Request("GET", self.bucket(), query=[("prefix", "d"), ("max-keys", "5")])

    def op_ListObjectsV2(self):
        return Request("GET", self.bucket(), query=[
            ("list-type", "2"), ("delimiter", "/"), ("start-after", "a"), ("max-keys", "3")])

    def op_ListObjectVersions(self):
        return Request("GET", self.bucket(), query=[("versions", None), ("key-marker", "a")])

    def op_ListMultipartUploads(self):
        return Request("GET", self.bucket(), query=[("uploads", None), ("max-uploads", "2")])

    def op_DeleteObjects(self):
        objects = [("Object", [("Key", self.key())]),
                   ("Object", [("Key", "gone"), ("VersionId", "null")])]
        return Request("POST", self.bucket(), query=[("delete", None)], digest=True,
                       xml=("Delete", [("Quiet", "false")] + objects))

    def _configuration(self, name, document, bucket=None, key=None, headers=None):
        verb = self.rng.choice(["GET", "PUT", "PUT", "DELETE"])
        request = Request(verb, bucket or self.bucket(), key, query=[(name, None)],
                          headers=headers or {})
        if verb == "PUT":
            request.xml, request.digest = document, True
        return request

    def op_BucketTagging(self):
        return self._configuration("tagging", ("Tagging", [("TagSet", [
            ("Tag", [("Key", "a"), ("Value", "b")]), ("Tag", [("Key", "c"), ("Value", "")])])]))

    def op_ObjectTagging(self):
        return self._configuration("tagging", ("Tagging", [("TagSet", [
            ("Tag", [("Key", "a"), ("Value", "b")])])]), key=self.key())

    def op_BucketLifecycle(self):
        return self._configuration("lifecycle", ("LifecycleConfiguration", [("Rule", [
            ("ID", "r1"), ("Filter", [("And", [("Prefix", "tmp/"), ("ObjectSizeGreaterThan", "1"),
                                               ("Tag", [("Key", "a"), ("Value", "b")])])]),
            ("Status", "Enabled"), ("Expiration", [("Days", "3650")]),
            ("NoncurrentVersionExpiration", [("NoncurrentDays", "3650")]),
            ("AbortIncompleteMultipartUpload", [("DaysAfterInitiation", "3650")])])]))

    def op_BucketCors(self):
        return self._configuration("cors", ("CORSConfiguration", [("CORSRule", [
            ("ID", "c"), ("AllowedOrigin", "https://example.test"), ("AllowedMethod", "GET"),
            ("AllowedMethod", "PUT"), ("AllowedHeader", "*"), ("ExposeHeader", "ETag"),
            ("MaxAgeSeconds", "30")])]))

    def op_BucketVersioning(self):
        request = self._configuration("versioning", ("VersioningConfiguration", [
            ("Status", self.rng.choice(["Enabled", "Suspended"])), ("MfaDelete", "Disabled")]))
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def op_ObjectLockConfiguration(self):
        request = self._configuration("object-lock", ("ObjectLockConfiguration", [
            ("ObjectLockEnabled", "Enabled"), ("Rule", [("DefaultRetention", [
                ("Mode", "GOVERNANCE"), ("Days", "1")])])]), bucket=LOCKED)
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def op_ObjectRetention(self):
        request = self._configuration("retention", ("Retention", [
            ("Mode", "GOVERNANCE"), ("RetainUntilDate", self.rng.choice(
                ["2030-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00"]))]),
            bucket=LOCKED, key=self.key(), headers={"x-amz-bypass-governance-retention": "true"})
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def op_ObjectLegalHold(self):
        request = self._configuration("legal-hold", ("LegalHold", [("Status", "OFF")]),
                                      bucket=LOCKED, key=self.key())
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def _acl(self):
        owner = self.state.owner_id
        return ("AccessControlPolicy", [("Owner", [("ID", owner)]), ("AccessControlList", [
            ("Grant", [(f'Grantee {XSI} xsi:type="CanonicalUser"', [("ID", owner)]),
                       ("Permission", "FULL_CONTROL")]),
            ("Grant", [(f'Grantee {XSI} xsi:type="Group"', [
                ("URI", "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")]),
                ("Permission", "READ")])])])

    def op_BucketAcl(self):
        request = self._configuration("acl", self._acl())
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def op_ObjectAcl(self):
        request = self._configuration("acl", self._acl(), key=self.key())
        request.method = "GET" if request.method == "DELETE" else request.method
        return request

    def op_BucketEncryption(self):
        return self._configuration("encryption", ("ServerSideEncryptionConfiguration", [
            ("Rule", [("ApplyServerSideEncryptionByDefault", [("SSEAlgorithm", "AES256")]),
                      ("BucketKeyEnabled", "false")])]))

    def op_BucketOwnershipControls(self):
        return self._configuration("ownershipControls", ("OwnershipControls", [
            ("Rule", [("ObjectOwnership", "BucketOwnerEnforced")])]))

    def op_BucketPolicy(self):
        verb = self.rng.choice(["GET", "PUT", "PUT", "DELETE"])
        request = Request(verb, self.bucket(), query=[("policy", None)])
        if verb == "PUT":
            # Allows only a made-up user: the admin key stays in charge.
            request.json = {"Version": "2012-10-17", "Statement": [{
                "Sid": "s", "Effect": "Allow",
                "Principal": {"AWS": ["arn:aws:iam::123456789012:user/fuzz"]},
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{request.bucket}", f"arn:aws:s3:::{request.bucket}/*"],
                "Condition": {"StringLike": {"s3:prefix": ["a/*"]},
                              "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}
        return request

    def op_BucketPolicyStatus(self):
        return Request("GET", self.bucket(), query=[("policyStatus", None)])

    def op_Unimplemented(self):
        name = self.rng.choice(["website", "notification", "replication", "select"])
        return Request(self.rng.choice(["GET", "PUT", "POST"]), self.bucket(),
                       self.rng.choice([None, "k"]), query=[(name, None)])

    def op_PutObject(self):
        body = self.rng.randbytes(self.rng.choice([0, 1, 100, 70000]))
        headers = {"content-type": "text/plain", "x-amz-meta-a": "b"}
        if self.rng.random() < 0.5:
            headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        return Request("PUT", self.bucket(), self.key(), headers=headers, body=body)

    def op_ObjectSSEC(self):
        # Over plain HTTP: the node trusts 127.0.0.1 to say it was HTTPS.
        key = bytes(range(32))
        headers = {"x-forwarded-proto": "https",
                   "x-amz-server-side-encryption-customer-algorithm": "AES256",
                   "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
                   "x-amz-server-side-encryption-customer-key-md5":
                       base64.b64encode(hashlib.md5(key).digest()).decode()}
        verb = self.rng.choice(["PUT", "GET", "HEAD"])
        return Request(verb, PLAIN, "sse-c", headers=headers,
                       body=b"secret" if verb == "PUT" else b"")

    def op_GetObject(self):
        headers = {"range": "bytes=0-10"} if self.rng.random() < 0.3 else {}
        query = self.rng.choice([[], [], [("partNumber", "1")], [("versionId", "null")]])
        return Request(self.rng.choice(["GET", "HEAD"]), self.bucket(), self.key(),
                       headers=headers, query=query)

    def op_DeleteObject(self):
        query = [("versionId", "null")] if self.rng.random() < 0.3 else []
        return Request("DELETE", self.bucket(), self.key(), query=query)

    def op_CopyObject(self):
        source = f"/{self.bucket()}/{quote(self.key())}"
        if self.rng.random() < 0.3:
            source = f"/{SENTINEL_BUCKET}/{quote(self.rng.choice(list(self.state.sentinels)))}"
        return Request("PUT", self.bucket(), "copy/" + self.key(),
                       headers={"x-amz-copy-source": source,
                                "x-amz-metadata-directive": "REPLACE"})

    def op_GetObjectAttributes(self):
        return Request("GET", self.bucket(), self.key(), query=[("attributes", None)],
                       headers={"x-amz-object-attributes": "ETag,ObjectSize,ObjectParts",
                                "x-amz-max-parts": "2"})

    def op_CreateMultipartUpload(self):
        return Request("POST", self.bucket(), self.key(), query=[("uploads", None)])

    def _upload(self):
        """(bucket, key, upload id, [(part number, etag)]) of an upload slot."""
        return self.rng.choice(self.state.uploads)

    def op_UploadPart(self):
        bucket, key, upload, _ = self._upload()
        return Request("PUT", bucket, key, body=self.rng.randbytes(10),
                       query=[("partNumber", str(self.rng.choice([1, 2, 3, 10000]))),
                              ("uploadId", upload)])

    def op_UploadPartCopy(self):
        bucket, key, upload, _ = self._upload()
        return Request("PUT", bucket, key, query=[("partNumber", "3"), ("uploadId", upload)],
                       headers={"x-amz-copy-source": f"/{bucket}/k",
                                "x-amz-copy-source-range": "bytes=0-0"})

    def op_CompleteMultipartUpload(self):
        bucket, key, upload, parts = self._upload()
        chosen = [p for p in parts if self.rng.random() < 0.7] or parts[-1:]
        return Request("POST", bucket, key, query=[("uploadId", upload)], xml=(
            "CompleteMultipartUpload",
            [("Part", [("PartNumber", str(n)), ("ETag", etag)]) for n, etag in chosen]))

    def op_AbortMultipartUpload(self):
        bucket, key, upload, _ = self._upload()
        return Request("DELETE", bucket, key, query=[("uploadId", upload)])

    def op_ListParts(self):
        bucket, key, upload, _ = self._upload()
        return Request("GET", bucket, key, query=[("uploadId", upload), ("max-parts", "1"),
                                                  ("part-number-marker", "0")])

    def op_PreflightCors(self):
        return Request("OPTIONS", self.bucket(), self.key(), headers={
            "origin": "https://example.test", "access-control-request-method": "GET"})

    # Mutations of a valid request.

    def signed_case(self, request, operation, anonymous=False):
        """A Case for ``request`` with none, one or two mutations applied;
        ``anonymous``: none that could aim it outside the sentinel bucket."""
        mutations = []
        rolls = self.rng.choice([0, 1, 1, 1, 1, 1, 1, 1, 2])
        target_override = None
        payload_hash = None
        late_headers = {}
        for _ in range(rolls):
            choices = ["header", "query", "key", "late-header"] + (
                [] if anonymous else ["path", "payload-hash"])
            if request.xml is not None or request.json is not None:
                choices += ["body"] * 4
            what = self.rng.choice(choices)
            # Half the header and query mutations change what the
            # operation already reads; half add something.
            if what == "header":
                names = sorted(request.headers) if self.rng.random() < 0.5 else []
                name = self.rng.choice(names or sorted(INTERESTING_VALUES))
                value = self.rng.choice(INTERESTING_VALUES.get(name, []) + TEXT[:8])
                request.headers[name] = value
                mutations.append(f"header {name}: {_short(value, 80)}")
            elif what == "query":
                names = [n for n, _ in request.query] if self.rng.random() < 0.5 else []
                name = self.rng.choice(names or sorted(QUERY_VALUES))
                value = self.rng.choice(QUERY_VALUES.get(name, TEXT))
                # The node reads the first of a repeated name.
                request.query = [(n, v) for n, v in request.query if n != name] + [(name, value)]
                mutations.append(f"query {name}={_short(value, 80)}")
            elif what == "key":
                key = self.rng.choice(KEYS)
                request.key = key
                request.bucket = request.bucket or (SENTINEL_BUCKET if anonymous else self.bucket())
                mutations.append(f"key {_short(key, 80)}")
            elif what == "path":
                target_override = self.rng.choice(RAW_PATHS)
                mutations.append(f"path {_short(target_override, 80)}")
            elif what == "late-header":
                name = self.rng.choice(sorted(LATE_HEADERS))
                value = self.rng.choice(LATE_HEADERS[name])
                late_headers[name] = value
                mutations.append(f"unsigned header {name}: {value!r} (ISO-8859-1)")
            elif what == "payload-hash":
                payload_hash = self.rng.choice([
                    "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "0" * 64, "é", "x"])
                mutations.append(f"x-amz-content-sha256: {payload_hash}")
            elif request.xml is not None:
                if self.rng.random() < 0.6:
                    request.xml, description = mutate_tree(self.rng, request.xml)
                    mutations.append("xml " + description)
                else:
                    request.body, description = mutate_xml_bytes(
                        self.rng, to_xml(request.xml).encode())
                    request.xml = None
                    mutations.append("xml " + description)
            else:
                request.body, description = mutate_json(self.rng, request.json)
                request.json = None
                mutations.append("json " + description)
        case = self.finish(request, operation, "signed", "; ".join(mutations) or "none",
                           target_override)
        case.payload_hash = payload_hash
        case.late_headers = late_headers
        return case

    def finish(self, request, operation, kind, mutation, target_override=None):
        body = request.body
        if request.xml is not None:
            body = to_xml(request.xml).encode()
        elif request.json is not None:
            body = json.dumps(request.json).encode()
        headers = dict(request.headers)
        if request.digest and "content-md5" not in headers:
            headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        target = target_override or (
            "/" if request.bucket is None else s3http.key_path(request.bucket, request.key))
        if request.query:
            target += "?" + "&".join(
                quote(name, safe="") + ("" if value is None else "=" + quote(value, safe=""))
                for name, value in request.query)
        return Case(kind, operation, mutation, request.method, target, headers, body)

    def next_case(self):
        roll = self.rng.random()
        if roll < 0.60:
            operation, template = self.rng.choice(self.templates)
            return self.signed_case(template(), operation)
        if roll < 0.65:
            return self.chunked_case()
        if roll < 0.70:
            return self.post_case()
        if roll < 0.80:
            return self.unsigned_case()
        if roll < 0.90:
            return self.badsig_case()
        return self.raw_case()

    # Cases of the other kinds.

    def chunked_case(self):
        """A PutObject in aws-chunked encoding (signed or trailer-only)."""
        payload = self.rng.randbytes(self.rng.choice([0, 5, 9000]))
        sizes = [self.rng.choice([1, 10, 8192]) for _ in range(3)]
        signed = self.rng.random() < 0.6
        headers = {"content-encoding": "aws-chunked",
                   "x-amz-decoded-content-length": str(len(payload))}
        mutation = "none"
        what = self.rng.choice(["none", "decoded-length", "trailer", "chunk-line", "cut"])
        if what == "decoded-length":
            headers["x-amz-decoded-content-length"] = self.rng.choice(NUMBERS)
            mutation = f"x-amz-decoded-content-length: {_short(headers['x-amz-decoded-content-length'], 60)}"
        trailer = None
        if not signed or what == "trailer":
            headers["x-amz-trailer"] = "x-amz-checksum-crc32"
            value = self.rng.choice(DIGESTS) if what == "trailer" else "AAAAAA=="
            trailer = ("x-amz-checksum-crc32", value)
            if what == "trailer":
                mutation = f"trailer x-amz-checksum-crc32:{value!r}"
        case = Case("chunked", "PutObject(aws-chunked)", mutation, "PUT",
                    s3http.key_path(self.bucket(), "chunked/" + self.key()), headers)
        case.payload_hash = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
                             if signed else "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        case.chunked = (payload, sizes, trailer, signed, what)
        return case

    def post_case(self):
        """A browser form upload: signed by its policy, or not."""
        signed = self.rng.random() < 0.5
        fields = dict(self.state.post_fields) if signed else {
            "key": "post/x", "policy": "e30=", "x-amz-algorithm": "AWS4-HMAC-SHA256"}
        bucket = PLAIN if signed else SENTINEL_BUCKET
        boundary = "fuzzboundary"
        parts = [(f'form-data; name="{name}"', [], value.encode()) for name, value in fields.items()]
        what = self.rng.choice(["none", "field", "many-headers", "long-header", "boundary",
                                "no-file", "big-field", "tagging", "many-fields"])
        mutation = what
        if what == "field":
            name = self.rng.choice(sorted(fields) + ["x-amz-meta-a", "content-type", "acl",
                                                     "success_action_status", "tagging"])
            value = self.rng.choice(TEXT + NUMBERS)
            parts.append((f'form-data; name="{name}"', [], value.encode("utf-8", "replace")))
            mutation = f"field {name}={_short(value, 60)}"
        elif what == "many-headers":
            parts.append(('form-data; name="x-amz-meta-h"',
                          [f"X-H{i}: v" for i in range(20)], b"v"))
        elif what == "long-header":
            parts.append(('form-data; name="x-amz-meta-' + "h" * 9000 + '"', [], b"v"))
        elif what == "big-field":
            parts.append(('form-data; name="x-amz-meta-big"', [], b"v" * 30000))
        elif what == "many-fields":
            parts.extend((f'form-data; name="x-amz-meta-f{i}"', [], b"v") for i in range(300))
        elif what == "tagging":
            tree, description = mutate_tree(self.rng, ("Tagging", [("TagSet", [
                ("Tag", [("Key", "a"), ("Value", "b")])])]))
            parts.append(('form-data; name="tagging"', [], to_xml(tree, namespace=False).encode()))
            mutation = "tagging field: " + description
        if what != "no-file":
            parts.append(('form-data; name="file"; filename="f.txt"', ["Content-Type: text/plain"],
                          self.rng.randbytes(100)))
        body = b""
        for disposition, extra, value in parts:
            head = "\r\n".join([f"Content-Disposition: {disposition}"] + extra)
            body += f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
        if what == "boundary":
            content_type = self.rng.choice(["multipart/form-data", "multipart/form-data; boundary=",
                                            "multipart/form-data; boundary=other",
                                            "multipart/form-data; boundary=" + "b" * 200])
            mutation = f"content-type {content_type!r}"
        return Case("signed" if signed else "unsigned", "PostObject", mutation, "POST",
                    f"/{bucket}", {"content-type": content_type}, body)

    def unsigned_case(self):
        """No signature, or a broken one, aimed where anonymous may do nothing:
        the sentinel bucket, a missing bucket, the service, ``/_z4/``."""
        operation, template = self.rng.choice(self.templates)
        request = template()
        if request.bucket is not None:
            request.bucket = self.rng.choice([SENTINEL_BUCKET, SENTINEL_BUCKET, "fz-missing"])
            if request.key is not None:
                request.key = self.rng.choice(list(self.state.sentinels))
        case = self.signed_case(request, operation, anonymous=True)
        case.kind = "unsigned"
        what = self.rng.choice(["none", "none", "authorization", "presign", "z4"])
        if what == "authorization":
            value = self.rng.choice([
                "AWS4-HMAC-SHA256 Credential=/,,,", "AWS4-HMAC-SHA256", "AWS x:y", "AWS :",
                "Bearer x", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=x",
                "é", "AWS4-HMAC-SHA256 Credential=" + "a" * 5000])
            case.headers["authorization"] = value
            case.mutation += f"; authorization: {_short(value, 60)}"
        elif what == "presign":
            case.target += ("&" if "?" in case.target else "?") + self.rng.choice([
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x&X-Amz-Date=x"
                "&X-Amz-Expires=%C2%B2&X-Amz-SignedHeaders=host&X-Amz-Signature=x",
                "AWSAccessKeyId=x&Expires=99999999999999999999&Signature=x",
                "X-Amz-Credential=%FF", "Signature=&Expires=&AWSAccessKeyId="])
            case.mutation += "; presign query"
        elif what == "z4":
            case.target = self.rng.choice(Z4_PATHS)
            case.method = self.rng.choice(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
            case.operation = "z4:" + case.target.split("?")[0]
            case.mutation = "none"
        return case

    def badsig_case(self):
        """A valid request with one signed part changed after signing, or
        signed with the wrong secret, key or time."""
        operation, template = self.rng.choice(self.templates)
        request = template()
        if operation == "CreateBucket":
            # A new name each time: a tampered request that got in shows.
            request.bucket = f"fz-tampered-{self.rng.randrange(10 ** 9)}"
        case = self.finish(request, operation, "badsig", "")
        choices = ["signature", "secret", "access-key", "date", "header", "path", "query"]
        if case.body:
            choices += ["body"] * 3
        case.badsig = self.rng.choice(choices)
        case.mutation = case.badsig
        if case.badsig == "body":
            # Still a valid document: only the signature can refuse it.
            case.headers.pop("content-md5", None)
        return case

    def raw_case(self):
        host = b"Host: 127.0.0.1\r\n"
        close = b"Connection: close\r\n"
        sentinel = f"/{SENTINEL_BUCKET}/plain.txt".encode()
        cases = {
            "garbage": lambda: self.rng.randbytes(self.rng.randrange(1, 200)) + b"\r\n\r\n",
            "http09": lambda: b"GET /\r\n\r\n",
            "version": lambda: b"GET / HTTP/" + self.rng.choice(
                [b"9.9", b"1.x", b"", b"1.1.1", b"0.9"]) + b"\r\n" + host + close + b"\r\n",
            "method": lambda: self.rng.choice([b"get", b"G\x00T", b"PATCH", b"TRACE", b"CONNECT",
                                               b"PRI", b"X" * 300, b"PROPFIND"])
            + b" " + sentinel + b" HTTP/1.1\r\n" + host + close + b"\r\n",
            "target": lambda: b"GET " + self.rng.choice([
                b"*", b"http://127.0.0.1/" + sentinel[1:], b"/" + bytes([self.rng.randrange(1, 32)]),
                b"/fz-sentinel/\xff\xfe", b"/fz-sentinel/\x7f", b"/a b", b"", b"%", b"//",
                b"/?" + b"&" * 5000, b"/fz-sentinel?%FF=1"]) + b" HTTP/1.1\r\n" + host + close + b"\r\n",
            "long-request-line": lambda: b"GET /fz-sentinel/" + b"a" * self.rng.choice(
                [17000, 70000]) + b" HTTP/1.1\r\n" + host + close + b"\r\n",
            "header": lambda: b"GET " + sentinel + b" HTTP/1.1\r\n" + host + self.rng.choice([
                b"NoColon\r\n", b"Space : x\r\n", b"X-A: a\r\n b\r\n", b": empty\r\n",
                b"X-N\x00ul: x\r\n", b"X-\xff: x\r\n", b"X-Big: " + b"a" * 70000 + b"\r\n",
                b"".join(b"X-%d: v\r\n" % i for i in range(300)), b"Host: other\r\n",
                b"Range: bytes=\xc2\xb2-3\r\n", b"Authorization: \xff\xfe\r\n",
                b"x-amz-date: \xff\r\n"]) + close + b"\r\n",
            "content-length": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host + self.rng.choice([
                b"Content-Length: -1\r\n", b"Content-Length: abc\r\n", b"Content-Length: \xc2\xb2\r\n",
                b"Content-Length: 99999999999999999999999\r\n",
                b"Content-Length: 1\r\nContent-Length: 2\r\n", b"Content-Length: 3, 3\r\n",
                b"Content-Length: +3\r\n"]) + close + b"\r\nabc",
            "length-and-chunked": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host
            + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n" + close
            + b"\r\n3\r\nabc\r\n0\r\n\r\n",
            "chunked": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host
            + b"Transfer-Encoding: " + self.rng.choice([b"chunked", b"chunked, chunked", b"gzip",
                                                        b"gzip, chunked", b"x"])
            + b"\r\n" + close + b"\r\n" + self.rng.choice([
                b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\nabc\r\n0\r\n\r\n",
                b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", b"3;ext=\xff\r\nabc\r\n0\r\n\r\n",
                b"3\r\nabcXX0\r\n\r\n", b"3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n", b"0\r\n\r\n"]),
            "pipelined": lambda: b"GET " + sentinel + b" HTTP/1.1\r\n" + host + b"\r\n"
            + self.rng.choice([b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad\r\n\r\n",
                               b"HEAD " + sentinel + b" HTTP/1.1\r\n" + host + close + b"\r\n"]),
            "expect": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host
            + b"Expect: 100-continue\r\nContent-Length: 3\r\n" + close + b"\r\nabc",
            "z4-head": lambda: b"HEAD " + self.rng.choice(Z4_PATHS).encode() + b" HTTP/1.1\r\n"
            + host + close + b"\r\n",
        }
        incomplete = {
            "cut-headers": lambda: b"GET " + sentinel + b" HTTP/1.1\r\nHost: 1",
            "cut-body": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host
            + b"Content-Length: 100\r\n\r\nabc",
            "cut-chunk": lambda: b"PUT /fz-sentinel/raw HTTP/1.1\r\n" + host
            + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
        }
        name = self.rng.choice(sorted(cases) + sorted(incomplete))
        raw = (cases.get(name) or incomplete[name])()
        return Case("raw", "raw:" + name, name, raw.split(b" ", 1)[0].decode("latin-1"),
                    raw=raw, answer_expected=name in cases)

    def slow_request(self):
        """What a slow client sends (see SlowClient)."""
        return self.rng.choice(["put", "get-sentinel", "unsigned-put", "stall"])


# -- the runner ---------------------------------------------------------------

@dataclass
class State:
    owner_id: str = ""
    sentinels: dict = field(default_factory=dict)     # key -> bytes
    uploads: list = field(default_factory=list)       # slots, see Generator._upload
    post_fields: dict = field(default_factory=dict)


class Fuzzer:
    """Runs cases against ``node`` in batches and collects findings."""

    batch_size = 100
    # Generous: a loaded 2-core box answers in milliseconds; more than
    # this is a hang, not slowness.
    answer_timeout = 30.0
    # The node logs a failure before it answers; a log write may still
    # take a moment to show in the file.
    log_wait = 5.0
    slow_clients = 2

    def __init__(self, node, rng, now=time.monotonic, sleep=time.sleep, out=print):
        self.node = node
        self.rng = rng
        self.now = now
        self.sleep = sleep
        self.out = out
        self.credentials = node.credentials()
        self.state = State()
        self.generator = Generator(rng, self.state)
        self.findings = {}
        self.statuses = collections.Counter()
        self.kinds = collections.Counter()
        self.codes = collections.Counter()
        self.requests = 0
        self.setup_requests = 0
        self.seconds = 0.0
        self._log_offset = 0
        # The log since the last batch's check, and the indexes of its
        # entries that a 500 answer already explains.
        self._pending_log = b""
        self._explained = set()

    # -- setup and restocking ------------------------------------------------

    def setup(self):
        s3 = self.node.client()
        self.client = s3
        for bucket in (PLAIN, VERSIONED, LOCKED, SENTINEL_BUCKET):
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=bucket == LOCKED)
        s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
        self.state.owner_id = s3.get_bucket_acl(Bucket=PLAIN)["Owner"]["ID"]
        for key in signing.AWKWARD_KEYS[:6]:
            size = self.rng.choice([0, 1, 1000, 70000, 4 * 1024 * 1024 + 1000])
            self.state.sentinels[key] = self.rng.randbytes(size)
            s3.put_object(Bucket=SENTINEL_BUCKET, Key=key, Body=self.state.sentinels[key])
        self.state.sentinels["4mib-plus"] = self.rng.randbytes(4 * 1024 * 1024 + 1000)
        s3.put_object(Bucket=SENTINEL_BUCKET, Key="4mib-plus", Body=self.state.sentinels["4mib-plus"])
        post = s3.generate_presigned_post(
            PLAIN, "post/${filename}", ExpiresIn=7 * 86400,
            Conditions=[["starts-with", "$key", "post/"], ["content-length-range", 0, 1 << 20]])
        self.state.post_fields = post["fields"]
        self.state.uploads = [None] * 4
        self.restock()

    def restock(self):
        """Put back what valid requests took away: the buckets, one object in
        each, live multipart uploads. Failures here are left to the cases
        to find."""
        s3 = self.client
        for bucket in FUZZ_BUCKETS:
            try:
                s3.head_bucket(Bucket=bucket)
            except ClientError:
                self._quietly(s3.create_bucket, Bucket=bucket,
                              ObjectLockEnabledForBucket=bucket == LOCKED)
            self._quietly(s3.put_object, Bucket=bucket, Key="k", Body=b"restocked")
        for i, slot in enumerate(self.state.uploads):
            if slot is not None and self._quietly(
                    s3.list_parts, Bucket=slot[0], Key=slot[1], UploadId=slot[2]):
                continue
            bucket, key = (PLAIN, VERSIONED)[i % 2], BASE_KEYS[i]
            created = self._quietly(s3.create_multipart_upload, Bucket=bucket, Key=key)
            if not created:
                self.state.uploads[i] = (bucket, key, "x" * 32, [(1, '"x"')])
                continue
            upload, parts = created["UploadId"], []
            for number in (1, 2):
                part = self._quietly(s3.upload_part, Bucket=bucket, Key=key, UploadId=upload,
                                     PartNumber=number, Body=b"part %d" % number)
                if part:
                    parts.append((number, part["ETag"]))
            self.state.uploads[i] = (bucket, key, upload, parts or [(1, '"x"')])

    def _quietly(self, fn, **kwargs):
        self.setup_requests += 1
        try:
            return fn(**kwargs)
        except (ClientError, OSError):
            return None

    # -- the run ---------------------------------------------------------------

    def run(self, requests, seconds):
        """Send up to ``requests`` cases, stopping early once ``seconds`` have
        passed (not an assertion: the run just stops sending)."""
        start = self.now()
        self.setup()
        while self.requests < requests and self.now() - start < seconds:
            if not self.batch(min(self.batch_size, requests - self.requests), start + seconds):
                break
        self.check_sentinels()
        self.seconds = self.now() - start

    def batch(self, size, deadline):
        """One batch of cases, slow clients trickling in beside them; False
        once the node is down."""
        slow = [SlowClient(self, self.generator.slow_request(), size)
                for _ in range(self.slow_clients)]
        for _ in range(size):
            if self.now() >= deadline:
                break
            case = self.generator.next_case()
            self.kinds[case.kind] += 1
            self.requests += 1
            self.send(case)
            for client in slow:
                client.step()
        for client in slow:
            client.finish()
        self.check_log()
        healthy = self.check_health()
        if healthy:
            self.restock()
        return healthy

    def send(self, case):
        if case.raw is not None:
            self.send_raw(case)
            return
        try:
            reply = self.exchange(case)
        except socket.timeout:
            self.record(case, None, f"no answer within {self.answer_timeout:.0f} s",
                        "no answer in time")
            return
        except (http.client.RemoteDisconnected, ConnectionResetError) as e:
            self.no_answer(case, repr(e))
            return
        self.judge(case, reply.status, reply.headers, reply.body)

    def exchange(self, case):
        headers, body = dict(case.headers), case.body
        if case.kind == "chunked":
            headers, body = self.chunked_request(case, headers)
        elif case.kind == "badsig":
            return self.send_badsig(case)
        elif case.kind == "signed" and case.operation != "PostObject":
            # (A form upload is signed by its fields.)
            headers = self.sign(case.method, case.target, headers, body, case.payload_hash)
        return self.post(case.method, case.target, headers, body, case.late_headers)

    def post(self, method, target, headers, body, late_headers=None):
        """Send a request; ``late_headers`` go out unsigned, as ISO-8859-1
        bytes (the rest as UTF-8, the bytes botocore signs)."""
        headers = dict(headers)
        for name, value in (late_headers or {}).items():
            headers[name] = value.encode("latin-1")
        return s3http.request(self.node, method, target, headers, body, signed=False,
                              timeout=self.answer_timeout, utf8_headers=True)

    def sign(self, method, target, headers, body, payload_hash=None, credentials=None):
        return s3http.sign(self.node, method, target, headers, body,
                           credentials or self.credentials, payload_hash)

    def chunked_request(self, case, headers):
        payload, sizes, trailer, signed, what = case.chunked
        headers = self.sign(case.method, case.target, headers, b"", case.payload_hash)
        seed = key = timestamp = scope = None
        if signed:
            timestamp = headers["X-Amz-Date"]
            scope = f"{timestamp[:8]}/us-east-1/s3/aws4_request"
            seed = headers["Authorization"].rsplit("Signature=", 1)[1]
            key = signing.signing_key(self.credentials[1], timestamp[:8])
        body, _ = signing.aws_chunked(payload, sizes, seed, key, timestamp, scope, trailer,
                                      trailer_signed=signed and trailer is not None)
        if what == "chunk-line":
            at = self.first_line_end(body)
            body = body[:at] + b"\xc2\xb2;" + body[at:]
            case.mutation = f"bytes inserted into the chunk framing at {at}"
        elif what == "cut":
            body = body[:len(body) // 2]
            case.mutation = "body cut in half"
        case.body = body
        return headers, body

    @staticmethod
    def first_line_end(body):
        # Depends only on the body, so that the RNG draws stay the same.
        return body.index(b"\r\n") if b"\r\n" in body else 0

    def send_badsig(self, case):
        method, target, headers, body = case.method, case.target, dict(case.headers), case.body
        access, secret = self.credentials
        what = case.badsig
        if what == "secret":
            headers = self.sign(method, target, headers, body, credentials=(access, secret + "x"))
        elif what == "access-key":
            headers = self.sign(method, target, headers, body,
                                credentials=("AKIDFUZZUNKNOWN0000", secret))
        elif what == "date":
            skew = datetime.timedelta(days=1)
            when = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            with s3http.signing_clock(when - skew if len(target) % 2 else when + skew):
                headers = self.sign(method, target, headers, body)
        else:
            headers = self.sign(method, target, headers, body)
            if what == "signature":
                head, _, signature = headers["Authorization"].rpartition("=")
                flipped = "0" if signature[0] != "0" else "1"
                headers["Authorization"] = f"{head}={flipped}{signature[1:]}"
            elif what == "header":
                date = headers["X-Amz-Date"]
                headers["X-Amz-Date"] = date[:-3] + ("01Z" if date[-3:-1] == "00" else "00Z")
            elif what == "path":
                target = target.replace("/", "/x", 2) if target.count("/") > 1 else "/x" + target
            elif what == "query":
                target += ("&" if "?" in target else "?") + "versionId=null"
            elif what == "body":
                # Trailing whitespace: the document means the same, only
                # the signed payload hash can tell.
                body = body + b"\n"
        case.target, case.body = target, body
        return self.post(method, target, headers, body)

    def send_raw(self, case):
        data = s3http.raw_exchange(self.node, case.raw, read_timeout=self.answer_timeout,
                                   shutdown_write=not case.answer_expected)
        responses = parse_responses(data)
        if not responses:
            if case.answer_expected:
                self.no_answer(case, f"{len(data)} bytes back: {data[:100]!r}")
            return
        # Pipelined requests: each answer is judged by its own method.
        methods = re.findall(rb"(?:^|\r\n\r\n)([A-Z]+) ", case.raw)
        for i, (status, headers, body) in enumerate(responses):
            method = methods[i].decode() if i < len(methods) else case.method
            self.judge(case, status, headers, body, method)

    # -- judging ---------------------------------------------------------------

    def no_answer(self, case, detail):
        trigger = ("a line over 16 KiB" if case.longest_line() > 16384
                   else case.operation)
        self.record(case, None, detail, f"connection closed without an answer ({trigger})")

    def judge(self, case, status, headers, body, method=None):
        method = method or case.method
        self.statuses[status] += 1
        error_code = None
        if status >= 400 and body[:1] == b"<":
            try:
                error_code = ElementTree.fromstring(body).findtext("Code")
            except ElementTree.ParseError:
                pass
        self.codes[(case.kind, status, error_code)] += 1
        if status >= 500 and status not in (501, 503):
            self.record(case, status, *self.cause(headers))
        elif (status >= 400 and method != "HEAD" and case.s3
              and not (case.raw is not None and "x-amz-request-id" not in headers and not body)):
            problem = error_document_problem(body)
            if problem:
                self.record(case, status, body.decode("utf-8", "replace"),
                            f"error document {problem}")
        if case.kind in ("unsigned", "badsig", "raw") and method in WRITES \
                and 200 <= status < 300:
            self.record(case, status, body.decode("utf-8", "replace"),
                        f"{case.kind} write accepted: {case.operation}"
                        + (f" with {case.badsig} changed" if case.badsig else ""))

    def cause(self, headers):
        """(detail, class name) of a 500, from the traceback the node logged
        for its request id (waiting up to ``log_wait`` for the log to show
        it); without one, from the newest traceback no 500 explains yet."""
        request_id = headers.get("x-amz-request-id")
        deadline = self.now() + self.log_wait
        while True:
            entries = log_entries(self.read_log())
            for i, (header, lines) in enumerate(entries):
                # (A newline in the key moves the request id to a later line.)
                if request_id and f"(request {request_id})" in header + "".join(lines):
                    self._explained.add(i)
                    return exception_line(lines), f"500: {traceback_cause(lines)}"
            if not request_id or self.now() >= deadline:
                break
            self.sleep(0.05)
        if request_id:
            return f"request {request_id}", "500 (its request id not in the log)"
        tracebacks = [i for i, (_, lines) in enumerate(entries)
                      if any("Traceback" in x for x in lines) and i not in self._explained]
        if tracebacks:
            self._explained.add(tracebacks[-1])
            lines = entries[tracebacks[-1]][1]
            return exception_line(lines), f"500 (no request id): {traceback_cause(lines)}"
        return "nothing in the log", "500 (no request id, nothing logged)"

    def read_log(self):
        """The node's log since the last batch's check."""
        path = self.node.log_path
        if os.path.getsize(path) < self._log_offset:
            # twistd moved the log to PATH.1 (it does at every 1 MB): the
            # rest of the old file, then the new one from its start.
            self._pending_log += _read_from(path + ".1", self._log_offset)
            self._log_offset = 0
        data = _read_from(path, self._log_offset)
        self._log_offset += len(data)
        self._pending_log += data
        return self._pending_log.decode("utf-8", "replace")

    def check_log(self):
        """Errors the node logged that no 500 answer explains."""
        text = self.read_log()
        self._pending_log = b""
        for i, (header, lines) in enumerate(log_entries(text)):
            if i in self._explained:
                continue
            if "#critical]" in header or "#error]" in header or "Unhandled" in header \
                    or any("Traceback" in line for line in lines):
                case = Case("log", "log", "one of the batch's cases")
                self.record(case, None, header[26:] + " " + exception_line(lines),
                            f"logged error: {traceback_cause(lines) if lines else header[26:120]}")
        self._explained.clear()

    def check_health(self):
        if self.node.process.poll() is not None:
            self.record(Case("health", "health"), None, self.node.log()[-2000:], "node exited")
            return False
        try:
            reply = s3http.request(self.node, "GET", "/_z4/ping", signed=False,
                                   timeout=self.answer_timeout)
        except OSError as e:
            self.record(Case("health", "health"), None, repr(e), "health request failed")
            return False
        if reply.status != 200:
            self.record(Case("health", "health"), reply.status, reply.body, "health request failed")
            return False
        return True

    def check_sentinels(self):
        listing = Case("sentinel", "ListObjectsV2", target=f"/{SENTINEL_BUCKET}?list-type=2")
        try:
            listed = set()
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=SENTINEL_BUCKET):
                listed.update(o["Key"] for o in page.get("Contents", []))
        except (ClientError, OSError) as e:
            self.record(listing, None, repr(e), "sentinel bucket unreadable")
        else:
            if listed != set(self.state.sentinels):
                self.record(listing, None,
                            f"extra {sorted(listed - set(self.state.sentinels))}, "
                            f"missing {sorted(set(self.state.sentinels) - listed)}",
                            "sentinel bucket changed")
        for key, data in self.state.sentinels.items():
            case = Case("sentinel", "GetObject", target=s3http.key_path(SENTINEL_BUCKET, key))
            try:
                got = self.client.get_object(Bucket=SENTINEL_BUCKET, Key=key)["Body"].read()
            except (ClientError, OSError) as e:
                self.record(case, None, repr(e), "sentinel object unreadable")
                continue
            if got != data:
                self.record(case, None, f"{len(got)} bytes, wanted {len(data)}",
                            "sentinel object changed")

    def record(self, case, status, detail, name):
        finding = self.findings.get(name)
        if finding is None:
            finding = self.findings[name] = Finding(name, status, case, str(detail))
            finding.operations.add(case.operation)
            self.out(f"FUZZ FINDING (case {self.requests}): {finding.describe()}")
        else:
            finding.count += 1
            finding.operations.add(case.operation)

    # -- reporting ------------------------------------------------------------

    def summary(self):
        lines = [f"{self.requests} requests ({dict(sorted(self.kinds.items()))}) "
                 f"+ {self.setup_requests} setup requests in {self.seconds:.1f} s",
                 "statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())),
                 f"failure classes: {len(self.findings)}, failures: "
                 f"{sum(f.count for f in self.findings.values())}"]
        common = sorted(self.codes.items(), key=lambda item: -item[1])[:25]
        lines.append("commonest (kind, status, code): " + ", ".join(
            f"{k[0]} {k[1]} {k[2]}: {n}" for k, n in common))
        return "\n".join(lines)

    def failures(self):
        return "\n".join(f.describe() for f in sorted(
            self.findings.values(), key=lambda f: -f.count))


class SlowClient:
    """A client that sends one request a few bytes at a time, a step after
    each of the batch's cases, then reads its answer."""

    def __init__(self, fuzzer, what, steps):
        self.fuzzer = fuzzer
        self.what = what
        node = fuzzer.node
        key = "slow/" + what
        if what == "put":
            target, body = s3http.key_path(PLAIN, key), b"slow body"
            headers = fuzzer.sign("PUT", target, {"content-length": str(len(body))}, body)
            self.case = Case("slow", "PutObject(slow)", "none", "PUT", target, headers, body)
        elif what == "get-sentinel":
            self.sentinel = next(iter(fuzzer.state.sentinels))
            target = s3http.key_path(SENTINEL_BUCKET, self.sentinel)
            headers = fuzzer.sign("GET", target, {}, b"")
            self.case = Case("slow", "GetObject(slow)", "none", "GET", target, headers)
        else:
            target, body = s3http.key_path(SENTINEL_BUCKET, key), b"unsigned"
            self.case = Case("slow" if what == "stall" else "unsigned", "PutObject(slow)",
                             what, "PUT", target, {"content-length": str(len(body))}, body)
        lines = [f"{self.case.method} {self.case.target} HTTP/1.1", f"Host: 127.0.0.1:{node.port}"]
        lines += [f"{k}: {v}" for k, v in self.case.headers.items()] + ["Connection: close"]
        self.data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.case.body
        self.case.raw = self.data
        if what == "stall":
            # Never finishes its headers: the node must serve the others.
            self.data = self.data[:len(self.data) // 2]
        self.step_size = max(1, len(self.data) // max(1, steps))
        self.sent = 0
        self.socket = socket.create_connection(("127.0.0.1", node.port),
                                               timeout=fuzzer.answer_timeout)

    def step(self):
        if self.sent < len(self.data):
            try:
                self.socket.sendall(self.data[self.sent:self.sent + self.step_size])
            except OSError:
                pass
            self.sent += self.step_size

    def finish(self):
        fuzzer = self.fuzzer
        try:
            if self.what == "stall":
                return
            self.socket.sendall(self.data[self.sent:])
            data = b""
            while True:
                piece = self.socket.recv(65536)
                if not piece:
                    break
                data += piece
        except OSError as e:
            fuzzer.record(self.case, None, repr(e), "slow client got no answer")
            return
        finally:
            self.socket.close()
        fuzzer.kinds["slow"] += 1
        responses = parse_responses(data)
        if not responses:
            fuzzer.record(self.case, None, "connection closed", "slow client got no answer")
            return
        status, headers, body = responses[0]
        fuzzer.judge(self.case, status, headers, body)
        expected = {"put": 200, "get-sentinel": 200, "unsigned-put": 403}[self.what]
        if status != expected or (self.what == "get-sentinel"
                                  and body != fuzzer.state.sentinels[self.sentinel]):
            fuzzer.record(self.case, status, body[:300], f"slow client {self.what}: wrong answer")


def _read_from(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


# -- parsing --------------------------------------------------------------------

def parse_responses(data):
    """The (status, lower-case headers, body) of each HTTP response in
    ``data``, as far as they are complete."""
    responses = []
    while data.startswith(b"HTTP/"):
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            break
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if status == 100:
            data = rest
            continue
        if length is not None and length.isdigit():
            body, data = rest[:int(length)], rest[int(length):]
        else:
            body, data = rest, b""
        responses.append((status, headers, body))
    return responses


# Characters XML 1.0 does not allow, even escaped.
XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def error_document_problem(body):
    """Why ``body`` is not an S3 error document, or None if it is one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        reason = str(e).split(":")[0]
        bad = XML_ILLEGAL.search(body.decode("utf-8", "replace"))
        if bad:
            reason += ": a control character" if bad.group() < " " else ": U+FFFE or U+FFFF"
        return f"not well-formed XML ({reason})"
    if root.tag != "Error":
        return f"has root <{root.tag}>, not <Error>"
    if not (root.findtext("Code") or "").strip():
        return "has no <Code>"
    return None


def log_entries(text):
    """(header, continuation lines) of each event in a twistd log. twistd
    starts each line after the first of an event with a tab, a newline in
    a message (from a key, say) included."""
    entries = []
    for line in text.split("\n"):
        if entries and line.startswith("\t"):
            entries[-1][1].append(line)
        elif line:
            entries.append((line, []))
    return entries


def exception_line(lines):
    """The last line of a logged traceback: the exception and its message."""
    return next((line.strip() for line in reversed(lines)
                 if line.strip() and not line.startswith("\t  ")), "?")


def traceback_cause(lines):
    """'Exception at file:line in function' of a logged traceback: the
    innermost frame in z4node, else the innermost frame."""
    exception = exception_line(lines).split(":", 1)[0].replace("builtins.", "")
    frames = [m for m in (re.search(r'File "([^"]*)", line (\d+), in (\S+)', line)
                          for line in lines) if m]
    ours = [m for m in frames if "/z4node/" in m.group(1)]
    if not (ours or frames):
        return exception
    match = (ours or frames)[-1]
    path = match.group(1)
    path = path[path.rindex("/z4node/") + 1:] if ours else path.rsplit("/", 2)[-2:][-1]
    return f"{exception} at {path}:{match.group(2)} in {match.group(3)}"
