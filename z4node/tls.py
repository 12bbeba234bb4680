"""TLS for the S3 port: loading a certificate chain and its key.

``--tls-cert`` is a PEM file with the server certificate first and any
intermediate certificates after it (what Let's Encrypt calls
``fullchain.pem``); ``--tls-key`` is the PEM private key. Both are read at
start-up and again on SIGHUP (``systemctl reload``), so a renewed
certificate needs no restart: connections opened after the reload get the
new one, and a pair that cannot be used is refused with the old one kept.
TLS 1.2 is the oldest version offered; OpenSSL's default cipher list
applies.

The local ``z4`` command reaches a TLS node over HTTPS too, but does not
verify its certificate: it talks to a node on its own machine and signs
with the admin key. Peers talk over the peer channel (``cluster.channel``),
sealed with the cluster secret, not over this port. Clients' certificate
checks are theirs.
"""

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.error import VerifyError


class TLSConfigError(Exception):
    """The certificate or key cannot be used; the message says why."""


def server_context(cert_path, key_path):
    """A Twisted TLS context factory serving ``cert_path`` with ``key_path``."""
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read {e.filename}: {e.strerror}") from None
    try:
        # The first certificate of the file is the server's.
        certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        extra = _extra_certificates(cert_pem)
        options = ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            extraCertChain=[c.original for c in extra],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
        # Fail now, not at the first handshake, if key and cert differ.
        context = options.getContext()
        context.check_privatekey()
    except (SSL.Error, VerifyError, ValueError, TypeError) as e:
        raise TLSConfigError(
            f"{cert_path} and {key_path} are not a usable PEM certificate and "
            f"matching private key: {e}") from None
    return options


class ReloadableServerTLS:
    """The S3 port's TLS context factory: the certificate of ``cert_path``
    and ``key_path``, read again by :meth:`reload`. Twisted asks it for a
    context per connection, so a reload reaches every connection after it."""

    def __init__(self, cert_path, key_path):
        self.cert_path = cert_path
        self.key_path = key_path
        self._options = server_context(cert_path, key_path)

    def getContext(self):
        return self._options.getContext()

    def reload(self):
        """Read both files again; raises TLSConfigError (and keeps serving
        the certificate it had) if they are not a usable pair."""
        self._options = server_context(self.cert_path, self.key_path)


def _extra_certificates(pem):
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + block for block in pem.split(marker)[1:]]
    return [ssl.Certificate.loadPEM(block) for block in blocks[1:]]
