"""S3's XML documents: writing responses and reading request bodies.

Responses are written directly as bytes (a listing of 1,000 keys is on the
hot path, and ElementTree would build 5,000 objects for it). Every document
written is well-formed XML 1.0, whatever a key holds: characters XML 1.0
cannot carry at all, even as references (C0 controls but tab, LF and CR;
U+FFFE, U+FFFF), are written percent-encoded as their UTF-8 bytes
(``a\x07b`` becomes ``a%07b``), and CR as ``&#13;`` so that parsers do not
turn it into LF. S3 writes such characters as references (``&#x7;``),
which no conforming parser accepts (botocore fails on them); a client that
needs such keys exactly asks for ``encoding-type=url``.

Request bodies are untrusted and parsed with defusedxml, which refuses
entity expansion and external references; namespaces are stripped so that
documents sent with or without S3's namespace read the same.
"""

import re
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from z4node.s3.errors import S3Error

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# What XML 1.0 text cannot hold as is: its forbidden characters (lone
# surrogates cannot reach here: text comes from strict UTF-8 decoding),
# and CR, which parsers would read back as LF.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")


def _safe_char(match):
    char = match.group()
    if char == "\r":
        return "&#13;"
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _text(value):
    """Element text for ``value``: escaped, and well-formed (see above)."""
    text = escape(str(value))
    if _UNSAFE.search(text):
        text = _UNSAFE.sub(_safe_char, text)
    return text


def iso8601(seconds):
    """S3's timestamp format in XML: 2009-10-12T17:50:30.000Z."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _write(out, name, value):
    if value is None:
        return
    # A name may carry attributes (``Grantee xsi:type="Group"``); the
    # closing tag is its first word.
    close = name.split(" ", 1)[0]
    if isinstance(value, list):
        out.append(f"<{name}>")
        for child_name, child_value in value:
            _write(out, child_name, child_value)
        out.append(f"</{close}>")
    elif isinstance(value, bool):
        out.append(f"<{name}>{'true' if value else 'false'}</{close}>")
    else:
        out.append(f"<{name}>{_text(value)}</{close}>")


def document(root, children, namespace=S3_NAMESPACE):
    """Serialize ``<root>`` with children, a list of (name, value) pairs
    where a value is text, a number, a bool, None (left out) or a list of
    pairs (a nested element). Attribute text in a name is written as is
    (callers pass constants only)."""
    out = [f'<{root} xmlns="{namespace}">' if namespace else f"<{root}>"]
    for name, value in children:
        _write(out, name, value)
    out.append(f"</{root}>")
    return _DECLARATION + "".join(out).encode("utf-8")


def parse(body, root):
    """Parse an untrusted request body whose root element must be ``root``.

    Returns the root Element with namespaces stripped from every tag.
    """
    try:
        element = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException, ValueError, LookupError):
        # LookupError: an encoding named in the declaration that Python
        # does not know.
        raise S3Error("MalformedXML") from None
    for node in element.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]
    if element.tag != root:
        raise S3Error("MalformedXML")
    return element


def text(element, name, default=None):
    child = element.find(name)
    if child is None:
        return default
    return child.text or ""
