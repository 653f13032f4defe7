"""The Carmic Pro API client: the only code that talks to Carmic.

``CarmicClient`` is the surface; the exception tree lives in :mod:`watchd.carmic.errors` and the
typed payloads in :mod:`watchd.carmic.models`.
"""

from watchd.carmic.client import CarmicClient
from watchd.carmic.pacing import TokenBucket
from watchd.carmic.retry import RetryPolicy
from watchd.carmic.sse import StreamSettings
from watchd.carmic.transfer import DownloadResult, ExpectedFile, UploadResult

__all__ = [
    "CarmicClient",
    "DownloadResult",
    "ExpectedFile",
    "RetryPolicy",
    "StreamSettings",
    "TokenBucket",
    "UploadResult",
]
