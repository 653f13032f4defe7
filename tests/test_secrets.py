"""watchd.secrets and the password in the config: sources in order, permissions, no leaks."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from watchd.config import ConfigError, load_config
from watchd.redact import RedactingFilter, redact
from watchd.secrets import (
    CREDENTIAL_NAME,
    ENV_PASSWORD,
    MASK,
    Secret,
    find_password,
    read_secret_file,
)

PW_FILE = "pw-from-file-1"
PW_INLINE = "pw-inline-2222"
PW_ENV = "pw-from-env-333"
PW_CRED = "pw-credential-44"


def secret_file(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    d = tmp_path / "credentials"
    d.mkdir()
    secret_file(d / CREDENTIAL_NAME, PW_CRED + "\n", 0o400)
    return d


# ---- the Secret type -----------------------------------------------------------------------------


def test_secret_never_shows_its_value() -> None:
    s = Secret("correct-horse-battery")
    assert s.reveal() == "correct-horse-battery"
    logged = "%s / %r" % (s, s)  # noqa: UP031 - the way logging formats
    for text in (repr(s), str(s), f"{s}", f"{s:>30}", logged, str([s]), str({"p": s})):
        assert "correct-horse" not in text
        assert MASK in text


def test_secret_is_registered_for_redaction() -> None:
    s = Secret("registered-secret-value")
    assert redact(f"login with {s.reveal()} failed") == "login with <secret> failed"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pw=%s!", (s.reveal(),), None)
    RedactingFilter().filter(record)
    assert "registered-secret-value" not in record.getMessage()


def test_secret_equality_copy_and_pickle() -> None:
    a, b = Secret("same-value"), Secret("same-value")
    assert a == b
    assert a != Secret("other-value")
    assert a != "same-value"
    assert hash(a) == hash(b)
    assert copy.copy(a) is a
    assert copy.deepcopy(a) is a
    with pytest.raises(TypeError):
        pickle.dumps(a)
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


# ---- reading a secret file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("pw\n", "pw"),
        ("pw", "pw"),
        ("pw\r\n", "pw"),
        ("pw\n\n", "pw"),
        (" spaced pw \n", " spaced pw "),
        ("pässwörd\n", "pässwörd"),
    ],
)
def test_trailing_newline_stripped(tmp_path: Path, content: str, expected: str) -> None:
    secret, warning = read_secret_file(secret_file(tmp_path / "pw", content))
    assert secret.reveal() == expected
    assert warning is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("line1\nline2\n", "holds more than one line"),
        (b"\xff\xfe", "is not UTF-8 text"),
        ("x" * 5000, "is larger than 4096 bytes"),
    ],
)
def test_implausible_secret_files(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = secret_file(tmp_path / "pw", content)
    with pytest.raises(ValueError, match=message) as info:
        read_secret_file(path)
    assert "line1" not in str(info.value)


def test_secret_file_must_be_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises((ValueError, OSError)):
        read_secret_file(tmp_path)


@pytest.mark.parametrize(
    ("mode", "who"), [(0o644, "group and others"), (0o640, "group"), (0o604, "others")]
)
def test_permission_warnings(tmp_path: Path, mode: int, who: str) -> None:
    path = secret_file(tmp_path / "pw", "pw\n", mode)
    _, warning = read_secret_file(path)
    assert warning == (
        f"{path} holds the Carmic password and is readable by {who} (mode {mode:04o}); chmod 600 it"
    )
    for private in (0o600, 0o400, 0o620):
        path.chmod(private)
        assert read_secret_file(path)[1] is None


# ---- the order of sources ------------------------------------------------------------------------


def test_sources_in_order(tmp_path: Path, creds: Path) -> None:
    pw_file = secret_file(tmp_path / "pw", PW_FILE + "\n")
    env = {ENV_PASSWORD: PW_ENV, "CREDENTIALS_DIRECTORY": str(creds)}

    found = find_password(password_file=pw_file, password=PW_INLINE, env=env)
    assert found.secret is not None and found.secret.reveal() == PW_FILE
    assert found.source == f"password_file {pw_file}"
    assert found.warnings == ("carmic.password is ignored: carmic.password_file comes first",)

    found = find_password(password_file=None, password=PW_INLINE, env=env)
    assert found.secret is not None and found.secret.reveal() == PW_INLINE
    assert found.source == "password in the config"

    found = find_password(password_file=None, password=None, env=env)
    assert found.secret is not None and found.secret.reveal() == PW_ENV
    assert found.source == f"environment variable {ENV_PASSWORD}"

    found = find_password(
        password_file=None, password=None, env={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert found.secret is not None and found.secret.reveal() == PW_CRED
    assert found.source == f"systemd credential {CREDENTIAL_NAME}"
    assert found.warnings == ()

    found = find_password(password_file=None, password=None, env={ENV_PASSWORD: ""})
    assert (found.secret, found.source, found.problems) == (None, "", ())
    found = find_password(
        password_file=None, password=None, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}
    )
    assert found.secret is None


def test_an_unreadable_password_file_does_not_fall_through(tmp_path: Path) -> None:
    found = find_password(
        password_file=tmp_path / "missing", password=PW_INLINE, env={ENV_PASSWORD: PW_ENV}
    )
    assert found.secret is None
    assert found.problems == (
        f"carmic.password_file: cannot read {tmp_path / 'missing'}: No such file or directory",
    )


def test_loose_credential_and_broken_credential(tmp_path: Path, creds: Path) -> None:
    (creds / CREDENTIAL_NAME).chmod(0o644)
    found = find_password(
        password_file=None, password=None, env={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert found.secret is not None
    assert found.warnings[0].startswith("systemd credential: ")
    (creds / CREDENTIAL_NAME).write_text("")
    found = find_password(
        password_file=None, password=None, env={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert found.secret is None
    assert found.problems == (f"systemd credential: {creds / CREDENTIAL_NAME} is empty",)


# ---- through load_config -------------------------------------------------------------------------


def config(tmp_path: Path, mode: int = 0o600, **carmic: Any) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    doc = {
        "carmic": {"email": "svc@example.com", **carmic},
        "daemon": {"state_dir": str(tmp_path / "state")},
        "inbox": [{"path": "inbox", "outbox": "outbox"}],
    }
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    path.chmod(mode)
    return path


def test_password_file_relative_to_the_config(tmp_path: Path) -> None:
    secret_file(tmp_path / "pw", PW_FILE + "\n")
    cfg = load_config(config(tmp_path, password_file="pw"), env={})
    assert cfg.carmic.password is not None
    assert cfg.carmic.password.reveal() == PW_FILE
    assert cfg.carmic.require_password() is cfg.carmic.password


def test_no_password_still_loads_but_cannot_be_required(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path), env={})
    assert cfg.carmic.password is None
    assert cfg.carmic.password_source == ""
    with pytest.raises(ConfigError) as info:
        cfg.carmic.require_password()
    (problem,) = info.value.problems
    assert problem.startswith("carmic.password: no Carmic password found; set one of: ")
    for source in (
        "carmic.password_file",
        "carmic.password",
        "WATCHD_CARMIC_PASSWORD",
        "$CREDENTIALS_DIRECTORY/carmic-password",
    ):
        assert source in problem


def test_env_and_credential_through_load_config(tmp_path: Path, creds: Path) -> None:
    path = config(tmp_path)
    cfg = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.carmic.password is not None and cfg.carmic.password.reveal() == PW_CRED
    cfg = load_config(path, env={ENV_PASSWORD: PW_ENV, "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.carmic.password is not None and cfg.carmic.password.reveal() == PW_ENV


def test_missing_password_file_is_a_problem_unless_paths_are_skipped(tmp_path: Path) -> None:
    path = config(tmp_path, password_file="missing")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        f"carmic.password_file: cannot read {tmp_path / 'missing'}: No such file or directory"
    ]
    # `watchd status` as an operator who may not read the daemon's secret
    cfg = load_config(path, env={}, check_paths=False)
    assert cfg.carmic.password is None
    assert cfg.warnings == tuple(info.value.problems)


def test_permission_warning_is_listed_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pw = secret_file(tmp_path / "pw", PW_FILE + "\n", 0o644)
    with caplog.at_level(logging.WARNING):
        cfg = load_config(config(tmp_path, password_file="pw"), env={})
    expected = (
        f"carmic.password_file: {pw} holds the Carmic password and is readable by group and "
        "others (mode 0644); chmod 600 it"
    )
    assert cfg.warnings == (expected,)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"config: {expected}")
    ]


def test_inline_password_in_a_readable_config_warns(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, 0o644, password=PW_INLINE), env={})
    assert cfg.carmic.password is not None and cfg.carmic.password.reveal() == PW_INLINE
    (warning,) = cfg.warnings
    assert warning.startswith(f"carmic.password: {tmp_path / 'config.toml'} holds the Carmic")
    assert warning.endswith("(or move it to a password_file)")
    assert load_config(config(tmp_path, 0o600, password=PW_INLINE), env={}).warnings == ()


def test_the_secret_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not in reprs, not in str(), not in problems or warnings, not in logs."""
    pw = secret_file(tmp_path / "pw", PW_FILE + "\n", 0o644)
    with caplog.at_level(logging.DEBUG):
        cfg = load_config(
            config(tmp_path, 0o644, password_file=str(pw), password=PW_INLINE), env={}
        )
        inline = load_config(config(tmp_path, 0o644, password=PW_INLINE), env={})
        env = load_config(config(tmp_path), env={ENV_PASSWORD: PW_ENV})
    texts = [repr(cfg), str(cfg), repr(inline), str(inline), repr(env), *cfg.warnings]
    texts += [*inline.warnings, caplog.text]
    # A bad config that holds a password: the error does not repeat it.
    path = config(tmp_path, password=PW_INLINE, realtime="push", poll_seconds=PW_INLINE)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={ENV_PASSWORD: PW_ENV})
    texts += [str(info.value), repr(info.value)]
    # A password of the wrong type: its type is named, not its value.
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path, password=12345678), env={})
    assert info.value.problems == ["carmic.password: must be a string (got integer)"]
    for text in texts:
        for value in (PW_FILE, PW_INLINE, PW_ENV, "12345678"):
            assert value not in text, text
