"""SigV4 query-string presigning, fast enough to sign a hundred thousand
URLs before a run.

botocore presigns a URL in about 100-150 µs; the benchmark needs one URL
per key it writes or deletes (tens of thousands for a fast server), so this
module signs them itself in a few µs each: the signing key is derived once,
and only the canonical request differs between URLs. Keys and buckets are
restricted to characters that need no URI encoding, so the canonical path
is the path as written.

The URLs are checked against botocore's for the same instant in
``tests/test_benchmark_tools.py`` and, in every run, by the servers themselves:
a request whose signature they reject is a failed request, and a run with
a failed request is not reported.
"""

import datetime
import hashlib
import hmac
import re
from urllib.parse import quote

_SAFE = re.compile(r"^[A-Za-z0-9._~/-]*$")
ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Presigner:
    """Presigns path-style S3 URLs for one endpoint and one key pair."""

    def __init__(self, host, access_key, secret_key, region="us-east-1", expires=3600,
                 now=None):
        self.host = host  # as sent in the Host header, e.g. "127.0.0.1:9670"
        now = now or datetime.datetime.now(datetime.timezone.utc)
        self.amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = now.strftime("%Y%m%d")
        self.scope = f"{date}/{region}/s3/aws4_request"
        key = _hmac(("AWS4" + secret_key).encode(), date)
        for part in (region, "s3", "aws4_request"):
            key = _hmac(key, part)
        self._signing_key = key
        self._auth_query = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{access_key}/{self.scope}",
            "X-Amz-Date": self.amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }

    def path(self, method, path, query=None):
        """The request target (path and query) of a presigned ``method path``."""
        if not _SAFE.match(path):
            raise ValueError(f"path needs URI encoding, not supported here: {path!r}")
        params = dict(self._auth_query)
        params.update(query or {})
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
        canonical_request = "\n".join([
            method, path, canonical_query, f"host:{self.host}", "", "host", "UNSIGNED-PAYLOAD"])
        string_to_sign = "\n".join([
            ALGORITHM, self.amz_date, self.scope,
            hashlib.sha256(canonical_request.encode()).hexdigest()])
        signature = hmac.new(self._signing_key, string_to_sign.encode(),
                             hashlib.sha256).hexdigest()
        return f"{path}?{canonical_query}&X-Amz-Signature={signature}"
