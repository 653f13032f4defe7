"""Values the Carmic API validates, shared by the config's checks and the bundled emulator."""

from __future__ import annotations

from typing import Final

__all__ = ["VIDEO_TYPES"]

# The video types the Carmic API takes for a project (its reference names the first few).
VIDEO_TYPES: Final = (
    "auto",
    "podcast",
    "interview",
    "tutorial",
    "vlog",
    "gaming",
    "sports",
    "webinar",
    "lecture",
    "presentation",
    "keynote",
    "talk_show",
    "comedy",
    "news",
    "educational",
    "review",
    "commentary",
    "documentary",
    "music",
    "livestream",
    "other",
)
