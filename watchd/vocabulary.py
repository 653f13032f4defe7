"""Values the Carmic API validates, shared by the config's checks and the bundled emulator."""

from __future__ import annotations

from typing import Final

__all__ = ["VIDEO_TYPES"]

# The video types the API takes for a project (carmic-api.md §3.3 lists the first few and "...").
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
