"""Presigned storage URLs in the S3 (SigV4 query) style, and their strict verification.

A URL looks like R2's::

    http://host:port/<bucket>/<key>?X-Amz-Algorithm=AWS4-HMAC-SHA256
        &X-Amz-Credential=<access key>%2F<yyyymmdd>%2Fauto%2Fs3%2Faws4_request
        &X-Amz-Date=<yyyymmddThhmmssZ>&X-Amz-Expires=<seconds>&X-Amz-SignedHeaders=host
        &X-Amz-Signature=<hex>

The signature is an HMAC (SigV4's derived key) over the method, the host, the path and the
query string **exactly as sent**: a client that decodes and re-encodes the URL (``%2F`` turned
into ``/``, parameters re-sorted) gets 403 SignatureDoesNotMatch, which is what a careless
client would meet on the real service.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

__all__ = ["ALGORITHM", "MAX_EXPIRES", "Presigner", "S3Error", "SignedRequest"]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES = 7 * 86400  # SigV4's limit on X-Amz-Expires
_REGION, _SERVICE = "auto", "s3"


class S3Error(Exception):
    """A storage refusal: HTTP status, S3 error code and message (rendered as S3's XML)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def xml(self, resource: str = "") -> str:
        """S3's XML error document."""
        res = f"<Resource>{_xml_escape(resource)}</Resource>" if resource else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{_xml_escape(self.message)}</Message>"
            f"{res}</Error>"
        )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class SignedRequest:
    """What a verified presigned request addresses."""

    bucket: str
    key: str
    expires_at: float


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _amz_date(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


class Presigner:
    """Makes and checks presigned URLs for one bucket."""

    def __init__(
        self,
        bucket: str = "carmic-media",
        *,
        access_key: str | None = None,
        secret: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.access_key = access_key or "EMU" + secrets.token_hex(8).upper()
        self._secret = secret or secrets.token_hex(20)

    def _signature(self, method: str, host: str, path: str, query: str, date: str) -> str:
        day = date[:8]
        scope = f"{day}/{_REGION}/{_SERVICE}/aws4_request"
        canonical = f"{method}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"{ALGORITHM}\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = _hmac(("AWS4" + self._secret).encode(), day)
        for part in (_REGION, _SERVICE, "aws4_request"):
            key = _hmac(key, part)
        return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()

    def path_for(self, key: str) -> str:
        """The URL path of an object key (percent-encoded the way S3 clients do)."""
        return "/" + quote(f"{self.bucket}/{key}", safe="/-_.~")

    def presign(self, method: str, base_url: str, key: str, *, ttl: int, now: float) -> str:
        """A URL that allows ``method`` on ``key`` for ``ttl`` seconds from ``now``.

        ``base_url`` is the storage origin as the client reaches it (``http://host:port``).
        """
        if not 1 <= ttl <= MAX_EXPIRES:
            raise ValueError(f"ttl must be 1..{MAX_EXPIRES} seconds")
        host = base_url.split("://", 1)[-1].rstrip("/")
        date = _amz_date(now)
        credential = quote(f"{self.access_key}/{date[:8]}/{_REGION}/{_SERVICE}/aws4_request", "")
        path = self.path_for(key)
        query = (
            f"X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={credential}&X-Amz-Date={date}"
            f"&X-Amz-Expires={ttl}&X-Amz-SignedHeaders=host"
        )
        signature = self._signature(method.upper(), host, path, query, date)
        return f"{base_url.rstrip('/')}{path}?{query}&X-Amz-Signature={signature}"

    def verify(self, method: str, raw_target: str, host: str, *, now: float) -> SignedRequest:
        """Check a request's raw target (path and query as sent) and ``Host`` header.

        Raises :class:`S3Error` (403 SignatureDoesNotMatch, 403 AccessDenied "Request has
        expired", 400 AuthorizationQueryParametersError, ...).
        """
        path, sep, query = raw_target.partition("?")
        if not sep or "X-Amz-Signature=" not in query:
            raise S3Error(403, "AccessDenied", "Access Denied: a presigned URL is required")
        # The signature is the last parameter and covers every byte before it: a client that
        # re-orders or re-encodes the query no longer matches.
        rest, _, given = query.rpartition("&X-Amz-Signature=")
        params = dict(parse_qsl(rest, keep_blank_values=True))
        missing = [
            name
            for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires")
            if not params.get(name)
        ]
        if missing or not rest:
            raise S3Error(
                400,
                "AuthorizationQueryParametersError",
                "Query-string authentication requires the X-Amz-Algorithm, X-Amz-Credential, "
                "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders and X-Amz-Expires parameters",
            )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise S3Error(400, "AuthorizationQueryParametersError", "Unsupported algorithm")
        date = params["X-Amz-Date"]
        try:
            signed_at = float(calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ")))
            expires = int(params["X-Amz-Expires"])
        except (ValueError, OverflowError):
            raise S3Error(
                400, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is invalid"
            ) from None
        if not 1 <= expires <= MAX_EXPIRES:
            raise S3Error(
                400,
                "AuthorizationQueryParametersError",
                f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds",
            )
        access_key = params["X-Amz-Credential"].split("/", 1)[0]
        if access_key != self.access_key:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        expected = self._signature(method.upper(), host, path, rest, date)
        if not hmac.compare_digest(expected, given):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        if now > signed_at + expires:
            raise S3Error(403, "AccessDenied", "Request has expired")
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        if bucket != self.bucket:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist")
        return SignedRequest(bucket=bucket, key=key, expires_at=signed_at + expires)
