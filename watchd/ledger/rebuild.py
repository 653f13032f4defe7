"""A lost ledger read back from the outboxes: every ``manifest.json`` is the record of one
delivery (its source's name, size and SHA-256, its rule and project), so a new or emptied
ledger learns from them what was delivered already and never bills it again.

Each manifest becomes a finished job (``delivered``, or ``failed`` for a failed manifest) with
its project id and outbox folder. When the source is still where the daemon left it (kept in
the inbox, or moved to ``_done/``/``_failed/``) and its SHA-256 is the manifest's, the job gets
the file's identity and fingerprint: the start-up scan passes over a kept file, and the same
content dropped again is a duplicate of it. When the source is gone, the job's fingerprint is
``sha256:<digest>``: a later file of the same size is hashed in full and compared
(:func:`rebuilt_without_source`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from watchd.config import ConfigError, InboxConfig, resolve_preset
from watchd.ledger.db import JobRow, Ledger
from watchd.ledger.protocol import LedgerAPI
from watchd.ledger.states import Stage
from watchd.outbox.delivery import DONE_DIR, FAILED_DIR
from watchd.outbox.manifest import MANIFEST_NAME
from watchd.pipeline.identity import fingerprint, sha256_file
from watchd.watching.ignore import nfc

log = logging.getLogger("watchd.ledger")

SHA_PREFIX = "sha256:"
ACTOR = "rebuild"
PENDING_KEY = "rebuild_pending"  # in the meta table while a read-back is under way


@dataclass
class RebuildReport:
    delivered: int = 0
    failed: int = 0
    known: int = 0  # manifests whose folder the ledger has already
    sources_found: int = 0  # of the recorded jobs, those whose source file was found
    problems: list[str] = field(default_factory=list)  # manifests that could not be read

    @property
    def recorded(self) -> int:
        return self.delivered + self.failed

    def summary(self) -> str:
        text = (
            f"{self.recorded} deliveries read back from the outbox manifests "
            f"({self.delivered} delivered, {self.failed} failed; "
            f"{self.sources_found} with their source file found"
        )
        if self.known:
            text += f"; {self.known} already in the ledger"
        if self.problems:
            text += f"; {len(self.problems)} manifests could not be read"
        return text + ")"


def manifests(outbox: Path) -> Iterator[Path]:
    """Every ``manifest.json`` under ``outbox``, hidden (temporary) folders left out; a folder
    with a manifest is a delivery, and its subfolders (exports) are not searched."""
    for dirpath, dirnames, filenames in os.walk(outbox):
        if MANIFEST_NAME in filenames:
            dirnames[:] = []
            yield Path(dirpath) / MANIFEST_NAME
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))


def any_manifest(inboxes: Sequence[InboxConfig]) -> bool:
    """Whether there is anything to read back (stops at the first manifest found)."""
    return any(
        inbox.outbox.is_dir() and next(manifests(inbox.outbox), None) is not None
        for inbox in inboxes
    )


def rebuild(
    ledger: Ledger,
    inboxes: Sequence[InboxConfig],
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> RebuildReport:
    """Record every delivery found in the inboxes' outboxes that the ledger does not know
    (a folder it has recorded is passed over: running it twice records nothing new, and one
    stopped half-way by ``should_stop`` goes on where it was)."""
    report = RebuildReport()
    seen: set[Path] = set()
    _set_pending(ledger, True)
    for inbox in inboxes:
        if inbox.outbox in seen or not inbox.outbox.is_dir():
            continue
        seen.add(inbox.outbox)
        for path in manifests(inbox.outbox):
            if should_stop():
                return report  # still pending: the next start goes on
            try:
                _record(ledger, inbox, path, report)
            except (OSError, ValueError, KeyError, TypeError) as e:
                report.problems.append(f"{path}: {e}")
                log.warning("cannot read back %s: %s", path, e)
    _set_pending(ledger, False)
    return report


def pending(ledger: Ledger) -> bool:
    """A read-back was started and not finished (stopped, killed): it must be done again."""
    row = ledger.db.execute("SELECT 1 FROM meta WHERE key = ?", (PENDING_KEY,)).fetchone()
    return row is not None


def _set_pending(ledger: Ledger, on: bool) -> None:
    with ledger.batch():
        if on:
            sql = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, 'started')"
        else:
            sql = "DELETE FROM meta WHERE key = ?"
        ledger.db.execute(sql, (PENDING_KEY,))


def _record(ledger: Ledger, inbox: InboxConfig, path: Path, report: RebuildReport) -> None:
    folder = path.parent
    if ledger.outbox_dir_taken(str(folder)):
        report.known += 1
        return
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("status") not in ("delivered", "partial", "failed"):
        raise ValueError("not a manifest")
    source = doc["source"]
    name, size, digest = str(source["name"]), int(source["size"]), source.get("sha256")
    if "/" in name or name in ("", ".", ".."):  # an outbox on a share may be written by others
        raise ValueError(f"source name {name!r} is not a file name")
    rule = str(doc.get("rule") or "")
    rel_folder = folder.parent.relative_to(inbox.outbox).as_posix()
    rel = nfc(name if rel_folder == "." else f"{rel_folder}/{name}")
    found = _find_source(inbox, rel, rule, size, digest)
    st = found.stat() if found else None
    failed = doc["status"] == "failed"
    error = doc.get("error") or {}
    with ledger.batch():
        job = ledger.add_job(
            inbox=str(inbox.path),
            rel_path=rel,
            path=str(found or inbox.path / rel),
            rule=rule,
            preset=_preset(inbox, rel, doc.get("preset")),
            size=size,
            mtime_ns=st.st_mtime_ns if st else 0,
            inode=st.st_ino if st else 0,
            dev=st.st_dev if st else 0,
            fingerprint=fingerprint(found, size) if found else f"{SHA_PREFIX}{digest or ''}",
            actor=ACTOR,
        )
        ledger.update(
            job.id,
            state=(Stage.FAILED if failed else Stage.DELIVERED).value,
            sha256=digest,
            project_id=doc.get("project_id"),
            outbox_dir=str(folder),
            disposed_to=str(found) if found else None,
            progress=100.0,
            error_code=error.get("code") if failed else None,
            error=error.get("message") if failed else None,
            finished_at=ledger.clock.now(),
        )
        ledger.record_event(job.id, "rebuilt", {"manifest": str(path)}, actor=ACTOR)
    report.sources_found += found is not None
    if failed:
        report.failed += 1
    else:
        report.delivered += 1


def _find_source(
    inbox: InboxConfig, rel: str, rule: str, size: int, digest: str | None
) -> Path | None:
    """The source file where the daemon left it, when its content is the manifest's."""
    if not digest:
        return None
    name = PurePosixPath(rel).name
    rule_parts = [p for p in PurePosixPath(rule).parts if p not in ("", ".", "..", "/")]
    for candidate in (
        inbox.path / rel,
        inbox.path.joinpath(DONE_DIR, *rule_parts, name),
        inbox.path.joinpath(FAILED_DIR, *rule_parts, name),
    ):
        try:
            st = candidate.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == size and sha256_file(candidate) == digest:
            return candidate
    return None


def _preset(inbox: InboxConfig, rel: str, recorded: Any = None) -> dict[str, Any]:
    """What the daemon stored for the file (a retry of a failed one needs it, and a duplicate
    must ask for the same): the manifest's ``preset`` when it has one, else the rule's now."""
    from watchd.config import Preset
    from watchd.daemon import _EmptyPreset, preset_record

    if isinstance(recorded, dict):
        with contextlib.suppress(ValueError, TypeError):  # written by others: the rule's then
            return preset_record(inbox, Preset.from_json(recorded))
    try:
        _, preset = resolve_preset(inbox, PurePosixPath(rel), None)
    except ConfigError:
        return preset_record(inbox, _EmptyPreset())
    return preset_record(inbox, preset)


def rebuilt_without_source(ledger: LedgerAPI, size: int) -> list[JobRow]:
    """Finished jobs read back from a manifest whose source was gone, of this size: a file of
    the same size must be hashed in full to tell whether it is one of them."""
    # A range of the fingerprint index: a look-up per queued file, no scan of every job.
    jobs = ledger.fingerprint_range(
        SHA_PREFIX, SHA_PREFIX[:-1] + chr(ord(SHA_PREFIX[-1]) + 1), size=size
    )
    # As for any original: one that failed before a project existed billed nothing.
    return [j for j in jobs if j.sha256 and (j.stage is Stage.DELIVERED or j.project_id)]


def rebuild_state_dir(state_dir: Path, inboxes: Sequence[InboxConfig]) -> RebuildReport:
    """``watchd ledger rebuild``: open the ledger in ``state_dir`` as the daemon does (its lock
    too: not while a daemon runs on it) and read the outboxes back into it."""
    from watchd.ledger.health import check_or_raise
    from watchd.ledger.opening import open_for_daemon

    opened = open_for_daemon(state_dir)
    try:
        check_or_raise(opened.path)
        return rebuild(opened.ledger, inboxes)
    finally:
        opened.close()
