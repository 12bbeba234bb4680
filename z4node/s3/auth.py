"""Who signed this request: the one entry point of S3 authentication.

:func:`authenticate` finds how a request is signed (SigV4 or SigV2, by
Authorization header or by presigned URL), verifies the signature with the
secret of the access key it names, and answers with the
:class:`Credentials` the rest of the request needs: which key, and how the
body is signed. What that key may then do is authorization, decided
elsewhere.

Sans-IO: no sockets, no clock (``now`` is handed in), no storage (secrets
come from ``lookup_secret``). The signature schemes live in ``sigv4`` and
``sigv2``; aws-chunked bodies are decoded by ``chunked``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from z4node.s3 import sigv2, sigv4
from z4node.s3.errors import S3Error
from z4node.s3.sigv4 import ChunkSigner

_V4_QUERY = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
_V2_QUERY = frozenset({"AWSAccessKeyId", "Signature"})


@dataclass(frozen=True)
class RequestView:
    """The parts of an HTTP request that signatures cover.

    ``headers`` maps lower-case names to values decoded from the wire as
    ISO-8859-1 (``bytes.decode("latin-1")``: one character per byte, so the
    exact bytes the client signed can be recovered), repeated headers joined
    with ``","``. ``raw_path`` and ``raw_query`` are the request target's
    bytes before and after ``?``, still percent-encoded.
    ``virtual_host_bucket`` is the bucket when it came from the Host header
    (SigV2 then signs ``/bucket`` in front of the path).
    """

    method: str
    raw_path: bytes
    raw_query: bytes
    headers: Mapping[str, str]
    virtual_host_bucket: str | None = None


@dataclass(frozen=True)
class Credentials:
    """An authenticated request's signer and how its body is vouched for.

    ``payload_hash`` is what the body must hash to: for SigV4 header
    signatures the x-amz-content-sha256 value (64 lowercase hex digits,
    ``UNSIGNED-PAYLOAD`` or a ``STREAMING-*`` value); for SigV2 and presigned
    URLs ``UNSIGNED-PAYLOAD`` (unless a presigned URL signed an
    ``X-Amz-Content-Sha256`` parameter). ``chunk_signer`` is set for
    ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`` bodies, for
    :class:`z4node.s3.chunked.AwsChunkedDecoder`.
    """

    access_key_id: str
    signature_version: int
    payload_hash: str
    presigned: bool
    chunk_signer: ChunkSigner | None


def authenticate(view: RequestView, lookup_secret: Callable[[str], str | None],
                 now: float) -> Credentials | None:
    """Verify ``view``'s signature; None if the request is anonymous (no
    Authorization header, no signature in the query).

    ``lookup_secret(access_key_id)`` returns the key's secret or None;
    ``now`` is the current time in unix seconds. Raises :class:`S3Error`
    with the code AWS would answer.
    """
    authorization = view.headers.get("authorization")
    params = sigv4.parse_query(view.raw_query) if view.raw_query else []
    names = {name for name, _ in params}
    v4_query = not names.isdisjoint(_V4_QUERY)
    v2_query = not names.isdisjoint(_V2_QUERY)
    if (authorization is not None) + v4_query + v2_query > 1:
        raise S3Error("InvalidArgument",
                      "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                      "Signature query string parameter or the Authorization header should be specified",
                      extra={"ArgumentName": "Authorization"})

    if authorization is not None:
        scheme = authorization.split(" ", 1)[0]
        if scheme == sigv4.ALGORITHM:
            access_key_id, payload_hash, chunk_signer = sigv4.verify_header(
                view, authorization, params, lookup_secret, now)
            return Credentials(access_key_id, 4, payload_hash, False, chunk_signer)
        if scheme == "AWS":
            access_key_id = sigv2.verify_header(view, authorization, params, lookup_secret, now)
            return Credentials(access_key_id, 2, sigv4.UNSIGNED_PAYLOAD, False, None)
        raise S3Error("InvalidArgument", "Unsupported Authorization Type",
                      extra={"ArgumentName": "Authorization", "ArgumentValue": authorization})
    if v4_query:
        access_key_id, payload_hash = sigv4.verify_query(view, params, lookup_secret, now)
        return Credentials(access_key_id, 4, payload_hash, True, None)
    if v2_query:
        access_key_id = sigv2.verify_query(view, params, lookup_secret, now)
        return Credentials(access_key_id, 2, sigv4.UNSIGNED_PAYLOAD, True, None)
    return None
