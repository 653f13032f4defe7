"""Every failure code, with the one message that says what went wrong and the one hint that says
what to do, in one table.

A failure's own message (``Fail.message``, from the probe or the API) carries the details (the
file's name, sizes, the service's words) and no advice; the advice is the table's hint, said
once, in the log, ``watchd status``, the manifest's error and ``FAILED.txt``. Hints may name
``{job_id}``. Codes from Carmic's API that are not listed get the hint of their HTTP status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    message: str  # what went wrong, in general (the details are the failure's own message)
    hint: str  # what to do about it


FAILURES: Mapping[str, Failure] = {
    "probe_empty": Failure("The file is empty (0 bytes).", "Copy the file into the inbox again."),
    "probe_truncated": Failure(
        "The file is incomplete: it ends before its video does, and stayed so for hold_seconds.",
        "Copy the whole file into the inbox again (export it again if the original is damaged).",
    ),
    "probe_too_large": Failure(
        "The file is larger than Carmic accepts (5 GB).",
        "Split or compress the video below 5 GB, then drop it into the inbox again.",
    ),
    "probe_not_video": Failure(
        "The file is not a readable video.",
        "Check what was copied (a renamed, damaged or wrong file?) and drop the video itself.",
    ),
    "probe_unsupported": Failure(
        "Carmic does not take this kind of file or video codec.",
        "Convert the video to MP4 (H.264/AAC) and drop it into the inbox again.",
    ),
    "probe_unreadable": Failure(
        "The file cannot be read, or it is damaged.",
        "Check the file's permissions and the share it is on; if it is damaged, export or copy "
        "it again.",
    ),
    "sidecar_invalid": Failure(
        "The file's sidecar .toml is invalid.",
        "Fix the sidecar .toml, then run `watchd retry {job_id}`.",
    ),
    "preset_invalid": Failure(
        "The file's caption_style is neither built in nor a template of the workspace; nothing "
        "was sent to Carmic.",
        "Fix the rule (or the file's sidecar .toml), then run `watchd retry {job_id}`: the retry "
        "takes the rule's preset as it is then.",
    ),
    "source_missing": Failure(
        "The file disappeared from the inbox before it was uploaded.",
        "Drop the file into the inbox again.",
    ),
    "duplicate_of_failed": Failure(
        "The same content was dropped before, and that job failed.",
        "Fix what made the first job fail and `watchd retry` it, then run "
        "`watchd retry {job_id}`: this copy is not sent to Carmic again.",
    ),
    "render_failed": Failure(
        "No clip could be rendered.",
        "Run `watchd retry {job_id}` to render again with the preset the job has (its clips were "
        "sent to render); for another preset, `watchd forget {job_id}` and drop the file again.",
    ),
    "no_clips": Failure(
        "Carmic found no clips in this video.",
        "Nothing to deliver: try another video_type or custom_instructions for this file "
        "(in a sidecar .toml), then drop it again.",
    ),
    "internal_error": Failure(
        "watchd hit an internal error.",
        "Please report it with the output of `watchd status --json`; `watchd retry {job_id}` "
        "tries again.",
    ),
    "failed_no_speech": Failure(
        "Carmic found no speech in this video.",
        "Clips are cut from speech: this video cannot be clipped; nothing to do.",
    ),
    "failed_corrupt_video": Failure(
        "Carmic could not decode the upload.",
        "Export the video again and drop it into the inbox.",
    ),
    "failed_download": Failure(
        "Carmic could not fetch the upload.",
        "Run `watchd retry {job_id}`.",
    ),
    "failed_billing": Failure(
        "The workspace ran out of processing minutes.",
        "Top up the minutes (or the plan), then run `watchd retry {job_id}`.",
    ),
}

# Carmic refused a request with a code of its own: the hint follows the HTTP status.
BY_STATUS: Mapping[int, Failure] = {
    413: Failure(
        "Carmic refused the file as too large.",
        "Split or compress the video below 5 GB, then drop it into the inbox again.",
    ),
    415: Failure(
        "Carmic does not accept this container type.",
        "Convert the video to MP4 and drop it into the inbox again.",
    ),
    400: Failure(
        "Carmic refused the rule's settings.",
        "Fix the rule's settings (or the file's sidecar .toml), then run `watchd retry {job_id}`: "
        "a job with no clip sent to render yet takes the rule's preset as it is then.",
    ),
    422: Failure(
        "Carmic refused the rule's settings.",
        "Fix the rule's settings (or the file's sidecar .toml), then run `watchd retry {job_id}`: "
        "a job with no clip sent to render yet takes the rule's preset as it is then.",
    ),
    403: Failure(
        "The service user lacks access.",
        "Check [carmic] workspace and the service user's role in it, then run "
        "`watchd retry {job_id}`.",
    ),
    404: Failure(
        "The project or clip no longer exists on Carmic (deleted in the web app?).",
        "Run `watchd forget {job_id}` and drop the file into the inbox again.",
    ),
}

OTHER = Failure(
    "The job could not be finished.",
    "Fix the cause the message names, then run `watchd retry {job_id}`.",
)


def failure(code: str, status: int | None = None) -> Failure:
    """The table's entry for ``code`` (or, for a code of Carmic's, for its HTTP status)."""
    return FAILURES.get(code) or (BY_STATUS.get(status) if status is not None else None) or OTHER


def hint(code: str, job_id: str, status: int | None = None) -> str:
    """The one hint for ``code``, with the job's id filled in."""
    return failure(code, status).hint.replace("{job_id}", job_id)


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs as a systemd service (its journal has our lines)."""
    env = os.environ if env is None else env
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def log_hint(job_id: str, env: Mapping[str, str] | None = None) -> str:
    """Where a person finds the job's log lines, for the way this daemon runs."""
    if under_systemd(env):
        return f"journalctl -u carmic-watchd JOB_ID={job_id}"
    return f'the output of `watchd run` (its terminal or log file), lines with "job {job_id}"'
