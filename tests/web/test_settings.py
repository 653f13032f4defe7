"""``[web]``: off unless listen is set, loopback by default, a token for any other address."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_config import load, problems, with_
from watchd.daemon import restart_only_changes

TOKEN = "a-long-random-dashboard-token-0123456789"


def token_file(site: Path, mode: int = 0o600, text: str = TOKEN) -> Path:
    path = site / "web-token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_off_unless_listen_is_set(site: Path) -> None:
    cfg = load(site, with_(site, "carmic"))
    assert not cfg.web.enabled and cfg.web.listen == ""
    assert not load(site, with_(site, "web", listen="")).web.enabled


def test_the_contract_example(site: Path) -> None:
    cfg = load(site, with_(site, "web", listen="127.0.0.1:8377", token_file=""))
    assert cfg.web.enabled and cfg.web.listen == "127.0.0.1:8377" and cfg.web.token is None


def test_a_bare_port_is_loopback(site: Path) -> None:
    assert load(site, with_(site, "web", listen="8377")).web.listen == "127.0.0.1:8377"


def test_a_network_address_needs_a_token_file(site: Path) -> None:
    (problem,) = problems(site, with_(site, "web", listen="0.0.0.0:8377"))
    assert problem.startswith("web.listen:") and "token_file" in problem
    cfg = load(site, with_(site, "web", listen="0.0.0.0:8377", token_file=str(token_file(site))))
    assert cfg.web.token is not None and cfg.web.token.reveal() == TOKEN
    assert any("plain HTTP" in w for w in cfg.warnings)
    assert TOKEN not in repr(cfg)


def test_token_file_problems(site: Path) -> None:
    missing = problems(site, with_(site, "web", listen="8377", token_file=str(site / "nope")))
    assert missing[0].startswith("web.token_file: cannot read the dashboard token")
    short = token_file(site, text="short")
    (problem,) = problems(site, with_(site, "web", listen="8377", token_file=str(short)))
    assert "too short" in problem and "short\n" not in problem


def test_a_token_readable_by_others_is_a_warning(site: Path) -> None:
    path = token_file(site, mode=0o644)
    cfg = load(site, with_(site, "web", listen="8377", token_file=path.name))  # relative
    assert cfg.web.token_file == str(path)
    assert any("web.token_file" in w and "chmod 600" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    ("listen", "words"),
    [
        ("nonsense", "expected HOST:PORT"),
        ("example.com:80", "must be an IP address"),
        ("127.0.0.1:99999", "0-65535"),
    ],
)
def test_bad_listen(site: Path, listen: str, words: str) -> None:
    (problem,) = problems(site, with_(site, "web", listen=listen))
    assert problem.startswith("web.listen:") and words in problem


def test_unknown_key(site: Path) -> None:
    (problem,) = problems(site, with_(site, "web", listen="8377", tokenfile="x"))
    assert problem.startswith("web.tokenfile: unknown key")


def test_a_reload_cannot_move_the_dashboard(site: Path) -> None:
    old = load(site, with_(site, "web", listen="8377"))
    new = load(site, with_(site, "web", listen="8378"))
    assert restart_only_changes(old, new) == ["[web] listen"]


def test_check_says_where_the_dashboard_will_be(site: Path) -> None:
    import io

    from watchd.checkcmd import check

    path = site / "config.toml"
    doc = with_(site, "web", listen="8377", token_file=str(token_file(site)))
    load(site, doc)  # writes config.toml
    out = io.StringIO()
    assert check(path, True, out, err=io.StringIO(), env={}) == 0
    line = f"web      dashboard on http://127.0.0.1:8377/ (loopback; bearer token from {site}"
    assert line in out.getvalue()
    assert TOKEN not in out.getvalue()
