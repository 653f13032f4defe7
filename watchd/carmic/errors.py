"""The Carmic exception tree, drawn once.

Every foreign failure (httpx exceptions, HTTP statuses, error envelopes) is translated into one
of these classes at the client's edge; the pipeline branches on the classes, never on raw codes::

    CarmicError
    ├── TransientError            worth retrying later: the request may succeed as it is
    │   ├── NetworkError          connect/read/write failures, timeouts, resets
    │   ├── ServerError           5xx
    │   ├── RateLimited           429 (retry_after from Retry-After when present)
    │   └── ConcurrencyLimited    the workspace tier's processing limit, whatever status carried it
    ├── PermanentError            the same request will fail again
    │   ├── BadRequest            400
    │   ├── AuthError             401 that survived refresh and re-login; bad credentials
    │   ├── Forbidden             403
    │   ├── NotFound              404
    │   ├── Conflict              409
    │   ├── PayloadTooLarge       413
    │   ├── UnsupportedMediaType  415
    │   └── Unprocessable         422
    ├── BillingRequired           402: insufficient minutes or wrong tier; waits for a person
    └── TransferError             storage (presigned URL) upload/download failures
        ├── UrlExpired            the presigned URL's signature has expired
        └── SourceChanged         the local file changed while it was being uploaded
"""

from __future__ import annotations


class CarmicError(Exception):
    """Base class. ``status`` is the HTTP status when there was one; ``message`` is safe to log."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.endpoint = endpoint
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.endpoint})" if self.endpoint else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{code}{self.message}{where}"

    @property
    def code(self) -> str:
        """A short stable code for manifests and status output."""
        return type(self).__name__


class TransientError(CarmicError):
    pass


class NetworkError(TransientError):
    pass


class ServerError(TransientError):
    pass


class RateLimited(TransientError):
    pass


class ConcurrencyLimited(TransientError):
    pass


class PermanentError(CarmicError):
    pass


class BadRequest(PermanentError):
    pass


class AuthError(PermanentError):
    pass


class Forbidden(PermanentError):
    pass


class NotFound(PermanentError):
    pass


class Conflict(PermanentError):
    pass


class PayloadTooLarge(PermanentError):
    pass


class UnsupportedMediaType(PermanentError):
    pass


class Unprocessable(PermanentError):
    pass


class BillingRequired(CarmicError):
    pass


class TransferError(CarmicError):
    pass


class UrlExpired(TransferError):
    pass


class SourceChanged(TransferError):
    pass


STATUS_ERRORS: dict[int, type[CarmicError]] = {
    400: BadRequest,
    401: AuthError,
    402: BillingRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: RateLimited,
}


def error_for_status(status: int) -> type[CarmicError]:
    """The class for an HTTP error status (before the concurrency-limit reading is applied)."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return ServerError
    return PermanentError
