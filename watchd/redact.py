"""Keep secrets out of logs, errors and reprs.

Presigned URLs carry their signature in the query string, JWTs travel as bearer tokens and the
password is a plain string: every log record passes through :class:`RedactingFilter`, and any
URL put into a message goes through :func:`redact_url` first.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit, urlunsplit

# A query already reduced to "?<redacted>" (by redact_url) is taken whole, with anything after
# it: scrubbing twice must not grow the text.
_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?(?:<redacted>)?[^\s\"'<>]*")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b")
_KV = re.compile(
    r"(?i)((?:password|passwd|secret|token|access|refresh|ticket|signature|x-amz-signature)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,}]+)"
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that it is scrubbed wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact_url(url: str) -> str:
    """The URL without its query string and fragment (which is where presigned URLs sign)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.query:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "<redacted>", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# Words without which a pattern above cannot match: most texts (every log line) contain none of
# them, and a substring test costs a fraction of a regex search.
_KV_WORDS = ("password", "passwd", "secret", "token", "access", "refresh", "ticket", "signature")


def redact(text: str) -> str:
    """Scrub presigned query strings, bearer tokens, JWTs, key=value secrets and known secrets."""
    if "?" in text and "://" in text:
        text = _URL_QUERY.sub(r"\1?<redacted>", text)
    # Case-insensitive matching also folds a few non-ASCII letters (U+017F 'ſ' matches 's'):
    # only an ASCII text may be ruled out by its lower-case form.
    lower = text.lower() if text.isascii() else None
    if lower is None or "bearer" in lower:
        text = _BEARER.sub(r"\1<redacted>", text)
    if "eyJ" in text:
        text = _JWT.sub("<jwt>", text)
    if lower is None or any(word in lower for word in _KV_WORDS):
        text = _KV.sub(r"\1<redacted>", text)
    with _lock:
        secrets = list(_secrets)
    for s in secrets:
        if s in text:
            text = text.replace(s, "<secret>")
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that renders the message once and scrubs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            msg = str(record.msg)
        clean = redact(msg)
        if clean != msg or record.args:
            record.msg = clean
            record.args = None
        return True
