"""The folders an inbox needs, made at start (and on reload): its rule folders, so that a person
sees where to drop files, and its outbox. ``watchd check`` lists the same ones as "created at
start".

Nothing is made inside an inbox that is missing (an unmounted share: a folder made there would
hide the mount point's emptiness), nor an outbox whose parent folder is missing (the same, for
an outbox on a share).
"""

from __future__ import annotations

import logging
from pathlib import Path

from watchd.config import InboxConfig

log = logging.getLogger(__name__)

CREATED_AT_START = "does not exist: `watchd run` creates it at start"


def missing_folders(inbox: InboxConfig) -> list[Path]:
    """The folders :func:`make_folders` would create now: the outbox, then the rule folders."""
    wanted = [inbox.outbox] if inbox.outbox.parent.is_dir() else []
    if inbox.path.is_dir():
        wanted += [inbox.path / rule.name for rule in inbox.rules if rule.name]
    return [folder for folder in wanted if not folder.is_dir()]


def make_folders(inbox: InboxConfig) -> list[Path]:
    """Create what :func:`missing_folders` lists; returns the folders made. A folder that
    cannot be made is logged and left (the job that needs it says so again)."""
    made: list[Path] = []
    for folder in missing_folders(inbox):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("cannot create %s: %s", folder, e.strerror or e)
            continue
        made.append(folder)
        log.info("created %s", folder)
    if not inbox.outbox.is_dir() and not inbox.outbox.parent.is_dir():
        log.warning(
            "outbox %s cannot be created: %s does not exist (an unmounted share?)",
            inbox.outbox,
            inbox.outbox.parent,
        )
    return made
