"""PostgreSQL connection URLs: checked before use, and shown only without their password."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from watchd.redact import register_secret

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://watchd@db.example.com:5432/watchd"


def redact_dsn(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***`` and no query string (libpq takes
    ``?password=`` there too). Never raises: an unparseable URL is not quoted at all."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_dsn(url: str) -> str | None:
    """Why ``url`` is not a usable libpq URL, or None. Registers a password in it as a secret
    (scrubbed from every log line). The message never contains the password."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return f'is not a valid URL; e.g. "{EXAMPLE}"'
    if parts.password:
        register_secret(unquote(parts.password))
        register_secret(parts.password)
    if parts.scheme not in SCHEMES:
        return f'must be a postgresql:// URL such as "{EXAMPLE}" (got {redact_dsn(url)})'
    if not parts.hostname and "host=" not in parts.query:
        return f'must name the database server\'s host, e.g. "{EXAMPLE}" (got {redact_dsn(url)})'
    if not parts.path.strip("/"):
        return f'must name the database after the host, e.g. "{EXAMPLE}" (got {redact_dsn(url)})'
    return None
