"""The Carmic password: where it comes from, and a wrapper that never shows it.

Carmic has no API keys, so the daemon holds a real user's password. It is looked for in this
documented order, the first one found wins:

1. ``[carmic] password_file`` — a file holding the password (the usual choice);
2. ``[carmic] password`` — inline in the config (then the config file itself is a secret);
3. the environment variable ``WATCHD_CARMIC_PASSWORD``;
4. the systemd credential ``carmic-password`` (``$CREDENTIALS_DIRECTORY/carmic-password``, from
   ``LoadCredential=`` in the unit).

A file's trailing newline is stripped (``echo pw > file`` must work). A secret file that group
or others may read earns a warning, not a refusal: the operator may have reasons (an ACL'd group
of admins), but they should know. Finding no password at all is not an error here: ``check
--offline`` and ``status`` work without one; the daemon asks with ``require_password()``.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from watchd.redact import register_secret

ENV_PASSWORD = "WATCHD_CARMIC_PASSWORD"
CREDENTIAL_NAME = "carmic-password"
MASK = "********"
# A password is short; a file larger than this is the wrong file (a key, a config, a log).
MAX_SECRET_BYTES = 4096

# The four sources, in lookup order, as messages name them.
SOURCES: tuple[str, ...] = (
    "carmic.password_file",
    "carmic.password",
    f"the environment variable {ENV_PASSWORD}",
    f"the systemd credential {CREDENTIAL_NAME} ($CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME})",
)


def no_password_message() -> str:
    """What to say when no source yields a password: every place that was looked at."""
    return "no Carmic password found; set one of: " + ", ".join(SOURCES)


class Secret:
    """A string that stays out of logs, reprs and tracebacks; :meth:`reveal` gives it.

    The value is registered with :mod:`watchd.redact`, so even a stray ``%s`` of the revealed
    string in a log line is scrubbed. Copies share the instance; pickling is refused so the value
    cannot leak into a cache or a queue by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """The secret itself: pass it straight to the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class PasswordLookup:
    """The outcome of :func:`find_password`.

    ``source`` says where the password came from (``""`` when none was found); ``problems`` are
    configuration errors (a password file that cannot be read), ``warnings`` are advice (loose
    permissions, a source that shadows another). Neither ever contains the secret.
    """

    secret: Secret | None
    source: str = ""
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def loose_permissions(
    path: Path, st: os.stat_result, what: str = "the Carmic password"
) -> str | None:
    """A warning when group or others may read the secret file at ``path``, else ``None``."""
    mode = stat.S_IMODE(st.st_mode)
    who = [name for bit, name in ((stat.S_IRGRP, "group"), (stat.S_IROTH, "others")) if mode & bit]
    if not who:
        return None
    return (
        f"{path} holds {what} and is readable by {' and '.join(who)} "
        f"(mode {mode:04o}); chmod 600 it"
    )


def read_secret_file(path: Path, what: str = "the Carmic password") -> tuple[Secret, str | None]:
    """The secret in ``path`` (trailing newline stripped) and a permission warning or ``None``.

    Raises :class:`OSError` when the file cannot be read and :class:`ValueError` when it is not a
    plausible password (empty, too large, not UTF-8). Messages never contain the content.
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = f.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a password file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    # Only line endings go: leading or inner spaces may be part of the password.
    value = text.rstrip("\r\n")
    if not value:
        raise ValueError(f"{path} is empty")
    if "\n" in value or "\r" in value:
        raise ValueError(f"{path} holds more than one line; put only the password in it")
    return Secret(value), loose_permissions(path, st, what)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        return f"cannot read {e.filename or 'it'}: {e.strerror or e}"
    return str(e)


def _from_file(path: Path, label: str, source: str, warnings: list[str]) -> PasswordLookup:
    try:
        secret, loose = read_secret_file(path)
    except (OSError, ValueError) as e:
        return PasswordLookup(None, problems=(f"{label}: {_describe(e)}",))
    if loose:
        warnings.append(f"{label}: {loose}")
    return PasswordLookup(secret, source, warnings=tuple(warnings))


def find_password(
    *,
    password_file: Path | None,
    password: str | None,
    env: Mapping[str, str],
    config_path: Path | None = None,
) -> PasswordLookup:
    """Look for the password in the documented order (see the module docstring).

    ``password_file`` is already resolved against the config's folder. A configured password
    file that cannot be read is a problem, not a reason to fall through: the operator said where
    the password is. ``config_path`` is checked for loose permissions when the password sits
    inline in it.
    """
    warnings: list[str] = []
    if password_file is not None:
        if password:
            warnings.append("carmic.password is ignored: carmic.password_file comes first")
        return _from_file(
            password_file, "carmic.password_file", f"password_file {password_file}", warnings
        )
    if password:
        if config_path is not None:
            try:
                loose = loose_permissions(config_path, config_path.stat())
            except OSError:
                loose = None
            if loose:
                warnings.append(f"carmic.password: {loose} (or move it to a password_file)")
        return PasswordLookup(Secret(password), "password in the config", warnings=tuple(warnings))
    from_env = env.get(ENV_PASSWORD, "")
    if from_env:
        return PasswordLookup(Secret(from_env), f"environment variable {ENV_PASSWORD}")
    credentials = env.get("CREDENTIALS_DIRECTORY", "")
    if credentials:
        path = Path(credentials) / CREDENTIAL_NAME
        if path.exists():
            return _from_file(
                path, "systemd credential", f"systemd credential {CREDENTIAL_NAME}", warnings
            )
    return PasswordLookup(None)
