"""carmic-watchd: watch folders that feed the Carmic Pro video-clipping API."""

__version__ = "0.1.0"
