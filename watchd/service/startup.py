"""Problems a user can cause at start, told in one line: what, where, and what to do.

``watchd run`` exits 2 on each of them without a traceback (``--debug`` or
``log_level = "debug"`` adds it). Whatever else goes wrong at start is still one line, with a
pointer to ``--debug``, and exit 1: it is a bug or a fault we did not foresee.
"""

from __future__ import annotations

import errno
import logging


class StartupError(Exception):
    """A problem found while starting that the user can fix; the message says how."""


def cannot_serve_metrics(address: str, e: OSError) -> StartupError:
    if e.errno == errno.EADDRINUSE:
        what = "the address is already in use (another process listens there)"
        fix = "stop that process or pick another port in [daemon] metrics"
    elif e.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied"
        fix = "pick a port above 1023 in [daemon] metrics"
    elif e.errno == errno.EADDRNOTAVAIL:
        what = "no interface of this machine has that address"
        fix = "use 127.0.0.1 or [::1] in [daemon] metrics"
    else:
        what = e.strerror or str(e)
        fix = "check [daemon] metrics"
    return StartupError(f"cannot serve metrics on {address}: {what}: {fix}")


def describe_unexpected(e: BaseException) -> str:
    """One line for an error nobody translated: an OSError names its path."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or e}: {e.filename}"
    return f"{type(e).__name__}: {e}"


def log_failure(log: logging.Logger, message: str, e: BaseException, *, debug: bool) -> None:
    """``message`` as one error line; the traceback only when debugging."""
    if debug:
        log.error("%s", message, exc_info=e)
    else:
        log.error("%s", message)
