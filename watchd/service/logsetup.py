"""Logging for the daemon: human text, JSON lines, or journald with searchable fields.

Log calls carry the job they are about as ``extra={"job_id": ..., "project_id": ..., "rule": ...,
"state": ..., "source_path": ...}`` (or through :func:`job_logger`). Each format keeps them:

* ``text``: ``2026-11-29T12:00:00Z INFO  job j-ab12 ep12.mp4: uploading → uploaded [state=...]``,
  always one line per record (newlines escaped) so that grep and journald see whole records.
  When stderr is journald's stream, each line starts with an ``<N>`` priority prefix instead
  (sd-daemon(3)), so ``journalctl -p warning`` works without systemd-python.
* ``json``: one object per line, ``{"ts", "level", "logger", "msg", "job_id", ...}`` (with the
  same ``<N>`` prefix on journald's stream, which journald strips).
* ``journal``: native journald entries through systemd-python, with ``JOB_ID=``, ``PROJECT_ID=``,
  ``RULE=``, ``STATE=``, ``SOURCE_PATH=`` fields, so ``journalctl -u carmic-watchd JOB_ID=j-ab12``
  finds one file's whole story.
* ``auto``: ``journal`` when stderr is the journal stream (``JOURNAL_STREAM`` names its
  device:inode, as systemd.exec(5) documents) and systemd-python is installed, else ``text``.

Every handler carries a :class:`~watchd.redact.RedactingFilter` that also scrubs the extra
fields and tracebacks (httpx puts whole presigned URLs into its exception messages).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import PurePath
from typing import Any, Literal, TextIO

from watchd.redact import RedactingFilter, redact

Format = Literal["text", "json", "journal"]
FORMATS = ("text", "json", "journal", "auto")

STRUCTURED_FIELDS = ("job_id", "project_id", "rule", "state", "source_path")
"""The per-job fields every format keeps; journald gets them upper-cased (``JOB_ID=``)."""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Chatty third-party loggers: httpx logs every request at INFO (with the full URL), aiohttp's
# access log is the bundled emulator's, watchdog's buffer logs each inotify event at DEBUG.
NOISY_LOGGERS = ("httpx", "httpcore", "hpack", "aiohttp.access", "watchdog")

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_REDACTED_MARK = "_watchd_redacted"
_FIELDS = "_watchd_fields"  # the scrubbed extra fields, kept on the record for the formatter
# Where a log call was made: only the journal shows it (CODE_FILE=...). Without it, logging
# does not walk the stack for every record (the logging HOWTO's "Optimization").
_SRCFILE = getattr(logging, "_srcfile", None)
_OWNED_MARK = "_watchd_owned"
_JOURNAL_NAME = re.compile(r"[^A-Z0-9_]")
_JOURNAL_RESERVED = frozenset(
    {"MESSAGE", "PRIORITY", "LOGGER", "THREAD_NAME", "SYSLOG_IDENTIFIER", "CODE_FILE"}
    | {"CODE_LINE", "CODE_FUNC", "EXCEPTION_TEXT"}
)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call added with ``extra=``: the structured ones first, then the rest
    sorted by name. ``None`` values are left out."""
    known: dict[str, Any] | None = getattr(record, _FIELDS, None)
    if known is not None:  # found (and scrubbed) by the filter already
        return dict(known)
    found = {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD_ATTRS and not k.startswith("_") and v is not None
    }
    ordered = {k: found.pop(k) for k in STRUCTURED_FIELDS if k in found}
    ordered.update(sorted(found.items()))
    return ordered


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4 or isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, PurePath):
        return redact(str(value))
    # Anything else is rendered now, while we can still scrub its text.
    return redact(str(value))


class FieldRedactingFilter(RedactingFilter):
    """:class:`RedactingFilter` plus the ``extra=`` fields, the traceback and the stack.

    A record passes through each handler's filter; it is scrubbed once and marked, because
    redaction is not idempotent (``?<redacted>`` would grow on every pass).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED_MARK, False):
            return True
        super().filter(record)
        fields = {key: _scrub(value) for key, value in extra_fields(record).items()}
        for key, value in fields.items():
            setattr(record, key, value)
        setattr(record, _FIELDS, fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, _REDACTED_MARK, True)
        return True


_last_second: tuple[int, str] = (-1, "")


def utc_timestamp(created: float, *, millis: bool = False) -> str:
    """``2026-11-29T12:00:00Z`` (or ``...:00.123Z``) for a record's ``created`` time."""
    global _last_second
    second = int(created)
    if _last_second[0] != second:  # records come in bursts: format each second once
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    stamp = _last_second[1]
    if millis:
        stamp += f".{int(created * 1000) % 1000:03d}"
    return stamp + "Z"


def describe(record: logging.LogRecord) -> str:
    """The human part of a record: ``job j-ab12 ep12.mp4: <message>``."""
    job_id = getattr(record, "job_id", None)
    source = getattr(record, "source_path", None)
    name = str(source).rstrip("/").rpartition("/")[2] if source else ""
    who = " ".join(p for p in (f"job {job_id}" if job_id else "", name) if p)
    message = record.getMessage()
    return f"{who}: {message}" if who else message


_NEEDS_QUOTES = re.compile(r'[\s"=\[\]]')


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """One line per record: time, level, who, message, the other key fields, the traceback.

    ``syslog_prefix`` replaces the timestamp with sd-daemon(3)'s ``<N>`` priority prefix, for a
    stderr that journald reads (it stamps the time itself).
    """

    def __init__(self, *, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        fields = extra_fields(record)
        fields.pop("job_id", None)
        fields.pop("source_path", None)
        line = describe(record)
        if fields:
            line += " [" + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items()) + "]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += " | " + record.exc_text
        if record.stack_info:
            line += " | " + record.stack_info
        line = _one_line(line)
        if self.syslog_prefix:
            return f"<{syslog_priority(record.levelno)}>{record.levelname:<5} {line}"
        return f"{utc_timestamp(record.created)} {record.levelname:<5} {line}"


class JsonFormatter(logging.Formatter):
    """JSON lines: ``ts``, ``level``, ``logger``, ``msg``, the extra fields, ``exc`` if any.

    ``syslog_prefix`` puts sd-daemon(3)'s ``<N>`` in front, for a stderr that journald reads: it
    strips the prefix, files the priority, and keeps the JSON intact in MESSAGE.
    """

    def __init__(self, *, syslog_prefix: bool = False) -> None:
        super().__init__()
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": utc_timestamp(record.created, millis=True),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        line = json.dumps(doc, ensure_ascii=False, default=str)
        return f"<{syslog_priority(record.levelno)}>{line}" if self.syslog_prefix else line


def syslog_priority(levelno: int) -> int:
    """The syslog/journald priority (0 emerg … 7 debug) for a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def journal_field_name(key: str) -> str | None:
    """``job_id`` → ``JOB_ID``; None for names journald would drop (it wants ``[A-Z0-9_]``,
    not starting with ``_`` or a digit, at most 64 characters)."""
    name = _JOURNAL_NAME.sub("_", key.upper())
    if not name or name[0] == "_" or name[0].isdigit() or len(name) > 64:
        return None
    return name


JournalSend = Callable[..., Any]
"""``systemd.journal.send(MESSAGE, **FIELDS)``."""


def load_journal_send() -> JournalSend | None:
    """systemd-python's ``systemd.journal.send``, or None when it is not installed."""
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    send: JournalSend = journal.send
    return send


class StructuredJournalHandler(logging.Handler):
    """Native journald entries with the record's extra fields as upper-case journal fields.

    systemd-python's own ``JournalHandler`` sends every attribute of the record under its
    Python name; journald drops the lower-case ones, so ``job_id`` would never become
    ``JOB_ID``. This handler names the fields itself and uses ``systemd.journal.send``.
    """

    def __init__(self, send: JournalSend, *, identifier: str = "carmic-watchd") -> None:
        super().__init__()
        self._send = send
        self.identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = describe(record)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                message += "\n" + record.exc_text
            fields: dict[str, Any] = {
                "PRIORITY": str(syslog_priority(record.levelno)),
                "LOGGER": record.name,
                "THREAD_NAME": record.threadName or "",
                "SYSLOG_IDENTIFIER": self.identifier,
                "CODE_FILE": record.pathname,
                "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
            }
            for key, value in extra_fields(record).items():
                name = journal_field_name(key)
                if name is None or name in _JOURNAL_RESERVED:
                    continue
                fields[name] = value if isinstance(value, str) else json.dumps(value, default=str)
            self._send(message, **fields)
        except Exception:
            self.handleError(record)


def journal_stream_matches(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``JOURNAL_STREAM`` is its
    ``device:inode``); a redirected stderr keeps the variable but not the identity."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):
        return False


def resolve_format(
    fmt: str,
    *,
    stream: TextIO,
    env: Mapping[str, str],
    journal_available: bool,
) -> Format:
    """The format ``setup_logging`` will use; ``journal`` without systemd-python gives ``text``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if fmt == "auto":
        return "journal" if journal_available and journal_stream_matches(stream, env) else "text"
    if fmt == "journal" and not journal_available:
        return "text"
    return fmt  # type: ignore[return-value]


def parse_level(level: str) -> int:
    """``"info"`` → ``logging.INFO`` (case-insensitive); ValueError names the choices."""
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)} (got {level!r})") from None


def setup_logging(
    fmt: str,
    level: str,
    *,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    journal_send: JournalSend | None = None,
) -> None:
    """Configure the root logger for ``fmt`` (``text``, ``json``, ``journal`` or ``auto``).

    ``stream`` defaults to ``sys.stderr`` at call time; ``env`` to ``os.environ``;
    ``journal_send`` to systemd-python's sender when installed. Calling it again (a reload
    changing the level) replaces the handler it installed before and leaves others alone.
    """
    levelno = parse_level(level)
    out = sys.stderr if stream is None else stream
    environ = os.environ if env is None else env
    send = journal_send if journal_send is not None else load_journal_send()
    chosen = resolve_format(fmt, stream=out, env=environ, journal_available=send is not None)

    handler: logging.Handler
    if chosen == "journal":
        assert send is not None
        handler = StructuredJournalHandler(send)
    else:
        handler = logging.StreamHandler(out)
        on_journal = journal_stream_matches(out, environ)
        if chosen == "json":
            handler.setFormatter(JsonFormatter(syslog_prefix=on_journal))
        else:
            handler.setFormatter(TextFormatter(syslog_prefix=on_journal))
    handler.addFilter(FieldRedactingFilter())
    setattr(handler, _OWNED_MARK, True)

    # No format shows the process id or name: don't look them up for every record.
    logging.logProcesses = False
    logging.logMultiprocessing = False
    teardown_logging()
    setattr(logging, "_srcfile", _SRCFILE if chosen == "journal" else None)  # noqa: B010
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in NOISY_LOGGERS:
        # At debug they inherit (and are still redacted by the handler's filter).
        logging.getLogger(name).setLevel(
            logging.NOTSET if levelno <= logging.DEBUG else logging.WARNING
        )

    if fmt == "journal" and chosen != "journal":
        logging.getLogger(__name__).warning(
            "log_format journal needs systemd-python (pip install 'carmic-watchd[systemd]'); "
            "logging as text instead"
        )


def teardown_logging() -> None:
    """Remove the handler :func:`setup_logging` installed (for tests and clean exits)."""
    setattr(logging, "_srcfile", _SRCFILE)  # noqa: B010
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OWNED_MARK, False):
            root.removeHandler(old)
            old.close()


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds one job's fields to every record; call-site ``extra=`` wins."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        merged = dict(self.extra or {})
        merged.update(kwargs.get("extra") or {})
        kwargs["extra"] = merged
        return msg, kwargs

    def bind(self, **fields: Any) -> JobLogger:
        """The same logger with more (or changed) fields, e.g. once the project id is known."""
        return JobLogger(self.logger, {**(self.extra or {}), **fields})


def job_logger(
    job_id: str, *, logger: logging.Logger | str = "watchd.job", **fields: Any
) -> JobLogger:
    """A :class:`JobLogger` for one job: ``job_logger("j-ab12", source_path=p, rule="podcasts")``.

    Field names must not clash with LogRecord attributes (``name``, ``msg``, ...).
    """
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return JobLogger(base, {"job_id": job_id, **fields})
