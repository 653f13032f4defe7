"""``[[notify]]`` validation: every problem named by its key path, secrets never quoted."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_config import EXAMPLE, base_doc, load, problems
from watchd.notify import config as notify_config
from watchd.notify.config import NOTIFY_KEYS, secret_problem
from watchd.notify.events import EVENT_TYPES

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "password").write_text("Sup3r-secret-pw\n")
    (tmp_path / "password").chmod(0o600)
    (tmp_path / "whsec").write_text(SECRET + "\n")
    (tmp_path / "whsec").chmod(0o600)
    return tmp_path


def doc(site: Path, *notify: dict[str, Any], **inbox: Any) -> dict[str, Any]:
    d = base_doc(site)
    d["inbox"][0].update(inbox)
    d["inbox"][0]["rules"] = {"podcasts": {}, "clients/acme": {}}
    d["notify"] = list(notify)
    return d


def test_the_three_kinds_with_their_defaults(site: Path) -> None:
    cfg = load(
        site,
        doc(
            site,
            {
                "url": "https://hooks.example.com/x",
                "secret_file": str(site / "whsec"),
                "headers": {"X-Team": "post"},
                "events": ["job.failed"],
                "rules": ["podcasts", ""],
            },
            {"apprise": "json://127.0.0.1:9/x"},
            {"command": ["/bin/true"], "name": "hook", "timeout": 5},
        ),
    )
    web, app, cmd = cfg.notify
    assert (web.kind, web.name) == ("webhook", "hooks.example.com")
    assert web.secret is not None and web.secret.reveal() == SECRET
    assert web.events == {"job.failed"} and web.rules == {"podcasts", ""}
    assert [(k, v.reveal()) for k, v in web.headers] == [("X-Team", "post")]
    assert web.wants("job.failed", "podcasts") and not web.wants("job.failed", "clients/acme")
    assert not web.wants("job.queued", "podcasts")
    assert (app.kind, app.name, app.events) == ("apprise", "json", frozenset(EVENT_TYPES))
    assert app.wants("inbox.paused", None)
    assert (cmd.kind, cmd.name, cmd.command, cmd.timeout) == ("command", "hook", ("/bin/true",), 5)
    assert cfg.inboxes[0].name == "inbox"
    # The URL is a secret: never in a repr.
    assert "hooks.example.com/x" not in repr(web)


def test_inbox_name_is_read(site: Path) -> None:
    assert load(site, doc(site, name="studio-a")).inboxes[0].name == "studio-a"


def test_default_names_repeat_with_a_number_given_names_must_not(site: Path) -> None:
    cfg = load(site, doc(site, {"url": "http://h.example/a"}, {"url": "http://h.example/b"}))
    assert [n.name for n in cfg.notify] == ["h.example", "h.example-2"]
    got = problems(
        site,
        doc(
            site, {"url": "http://a.example/", "name": "x"}, {"command": ["/bin/true"], "name": "x"}
        ),
    )
    assert got == ['notify[1].name: "x" is the name of notify[0] already']


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            {"url": "http://a.example/", "evnets": ["job.failed"]},
            "notify[0].evnets: unknown key, did you mean events?",
        ),
        (
            {"url": "http://a.example/", "events": ["job.fialed"]},
            'notify[0].events: unknown event "job.fialed", did you mean "job.failed"?',
        ),
        (
            {"url": "http://a.example/", "events": ["nope"]},
            'notify[0].events: unknown event "nope"; events are job.queued',
        ),
        (
            {"url": "http://a.example/", "rules": ["podcast"]},
            'notify[0].rules: unknown rule "podcast", did you mean "podcasts"?',
        ),
        (
            {"url": "http://a.example/", "rules": ["zzz"]},
            'notify[0].rules: unknown rule "zzz" (the rules are',
        ),
        ({"url": "http://a.example/", "events": []}, "notify[0].events: must not be empty"),
        ({"url": "ftp://a.example/x"}, "notify[0].url: must be an http(s) URL such as"),
        (
            {"url": "http://a.example/", "apprise": "json://x"},
            "notify[0]: needs exactly one of url, apprise or command (got url and apprise)",
        ),
        (
            {"events": ["job.failed"]},
            "notify[0]: needs exactly one of url, apprise or command (got none)",
        ),
        ({"command": "/bin/true"}, "notify[0].command: must be a non-empty array of strings"),
        (
            {"command": ["/nonexistent/hook"]},
            "notify[0].command: /nonexistent/hook: not found or not executable",
        ),
        (
            {"apprise": "json://x", "secret_file": "/x"},
            "notify[0].secret_file: only applies to a webhook",
        ),
        (
            {"url": "http://a.example/", "headers": {"webhook-id": "x"}},
            "notify[0].headers.webhook-id: is set by watchd itself",
        ),
        (
            {"url": "http://a.example/", "headers": {"X-A": 1}},
            "notify[0].headers.X-A: must be a string (got integer)",
        ),
        ({"url": "http://a.example/", "timeout": 0}, "notify[0].timeout: must be ≥ 1"),
        (
            {"url": "http://a.example/", "retry_first_seconds": 30},
            "notify[0].retry_first_seconds: must be ≤ 10",
        ),
        (
            {"apprise": "nosuchservice://x"},
            'notify[0].apprise: "nosuchservice://..." is not a URL Apprise can use',
        ),
    ],
)
def test_problems_are_named_precisely(site: Path, table: dict[str, Any], expected: str) -> None:
    got = problems(site, doc(site, table))
    assert any(p.startswith(expected) for p in got), got


def test_not_an_array_of_tables(site: Path) -> None:
    d = base_doc(site)
    d["notify"] = {"url": "http://a.example/"}
    assert problems(site, d) == ["notify: must be an array of tables: write [[notify]] (got table)"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hunter2-not-a-secret", "not a webhook secret"),
        ("whsec_!!!notbase64", "not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "the key is 5 bytes"),
    ],
)
def test_a_bad_secret_is_refused_without_showing_it(
    site: Path, content: str, expected: str
) -> None:
    (site / "bad").write_text(content)
    (site / "bad").chmod(0o600)
    got = problems(site, doc(site, {"url": "http://a.example/", "secret_file": str(site / "bad")}))
    assert len(got) == 1 and expected in got[0] and got[0].startswith("notify[0].secret_file")
    assert content not in got[0]
    assert secret_problem(SECRET) is None


def test_a_secret_readable_by_others_is_warned_about(site: Path) -> None:
    (site / "whsec").chmod(0o644)
    cfg = load(site, doc(site, {"url": "http://a.example/", "secret_file": str(site / "whsec")}))
    assert any(
        w.startswith("notify[0].secret_file:") and "readable by group and others" in w
        for w in cfg.warnings
    ), cfg.warnings


def test_a_missing_secret_file_is_an_error_or_for_status_a_warning(site: Path) -> None:
    d = doc(site, {"url": "http://a.example/", "secret_file": str(site / "missing")})
    assert problems(site, d)[0].startswith("notify[0].secret_file: cannot read")
    cfg = load(site, d, check_paths=False)
    assert cfg.notify[0].secret is None and cfg.warnings


def test_url_and_header_values_are_never_quoted(site: Path) -> None:
    got = problems(site, doc(site, {"url": 12345, "headers": {"bad name": "tok-123"}}))
    assert all("12345" not in p and "tok-123" not in p for p in got), got


def test_apprise_without_the_extra_says_how_to_install_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify_config, "apprise_available", lambda: False)
    got = problems(site, doc(site, {"apprise": "slack://a/b/c"}))
    assert got == [
        "notify[0].apprise: needs the Apprise library, which is not installed: "
        "pip install 'carmic-watchd[notify]'"
    ]


def test_the_example_config_documents_every_notify_key() -> None:
    text = EXAMPLE.read_text()
    for key in NOTIFY_KEYS:
        assert re.search(rf"^#\s*{key}\s*=", text, re.M), key
    assert "[[notify]]" in text
    assert re.search(r"^#\s*name\s*=\s*\"studio-a\"", text, re.M)


def test_check_lists_the_notifiers_without_secrets(site: Path) -> None:
    import io

    from watchd.checkcmd import describe

    cfg = load(
        site,
        doc(
            site,
            {"url": "https://hooks.example.com/tok-55", "secret_file": str(site / "whsec")},
            {"command": ["/bin/true"], "events": ["job.failed"], "rules": ["podcasts"]},
        ),
    )
    out = io.StringIO()
    describe(cfg, out)
    text = out.getvalue()
    assert "notify   webhook hooks.example.com (signed): every event; every rule" in text
    assert 'notify   command true: job.failed; rules "podcasts"; timeout 15 s' in text
    assert "tok-55" not in text and SECRET not in text
