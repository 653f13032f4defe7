"""watchd.checkcmd: the offline report, exit codes, and the online login against a mock API."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from tests.carmic.fakeapi import API, EMAIL, PASSWORD, FakeApi, err, ok
from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import PermanentError
from watchd.checkcmd import build_client, check, preset_summary
from watchd.cli import main
from watchd.clock import FakeClock
from watchd.config import CarmicConfig, Preset, RenderChoice, load_config
from watchd.secrets import ENV_PASSWORD, Secret

ENV = {ENV_PASSWORD: PASSWORD}


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    (tmp_path / "inbox" / "podcasts").mkdir(parents=True)
    doc = {
        "carmic": {"api_url": API, "email": EMAIL},
        "daemon": {"state_dir": str(tmp_path / "state")},
        "inbox": [
            {
                "path": "inbox",
                "outbox": "outbox",
                "on_success": "keep",
                "language": "en",
                "rules": {
                    "podcasts": {
                        "video_type": "podcast",
                        "caption_style": "HORMOZI",
                        "render": {"min_score": 70, "max_clips": 5},
                        "exports": ["premiere", "davinci"],
                        "template": {"style": {"captionFont": "Inter", "uppercase": True}},
                    },
                    "clients/acme": {"caption_style": "ACME-BRAND", "render": "none"},
                },
            }
        ],
    }
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def run(path: Path, *, offline: bool, env: dict[str, str] | None = None, **kw: Any) -> Run:
    out, errors = io.StringIO(), io.StringIO()
    code = check(path, offline, out, err=errors, env=ENV if env is None else env, **kw)
    return Run(code, out.getvalue(), errors.getvalue())


def over(api: Any) -> Any:
    """A client factory: the real CarmicClient, over a mock transport."""

    def build(carmic: CarmicConfig, password: Secret) -> Any:
        return build_client(
            carmic,
            password,
            http=httpx.AsyncClient(transport=httpx.MockTransport(api)),
            storage_http=httpx.AsyncClient(transport=httpx.MockTransport(api)),
            clock=FakeClock(),
            rng=random.Random(0),
        )

    return build


def never(carmic: CarmicConfig, password: Secret) -> Any:
    raise AssertionError("offline must not build a client")


# ---- offline -------------------------------------------------------------------------------------


def test_offline_report(cfg_path: Path, tmp_path: Path) -> None:
    r = run(cfg_path, offline=True, client_factory=never)
    assert r.code == 0
    assert r.err == ""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    lines = r.out.splitlines()
    assert lines[0] == f"config {cfg_path}"
    assert lines[1] == f"carmic   {API} as {EMAIL}"
    assert lines[2] == f"         password: environment variable {ENV_PASSWORD}"
    assert f"inbox[0] {inbox}" in r.out
    assert f"  outbox  {outbox} (does not exist: `watchd run` creates it at start)" in lines
    assert "  sources on success kept; on failure moved to <inbox>/_failed/<rule>/" in lines
    # each rule with its folder, where results go, and its preset
    text = r.out
    assert f"root               {inbox}/ and folders without a rule" in text
    assert f"-> {outbox}/<video name>/" in text
    made = "(does not exist: `watchd run` creates it at start)"
    assert f"rule clients/acme  {inbox}/clients/acme/ {made}" in text
    assert f"-> {outbox}/clients/acme/<video name>/" in text
    assert f"rule podcasts      {inbox}/podcasts/\n" in text
    assert f"-> {outbox}/podcasts/<video name>/" in text
    assert (
        "type podcast; language en/single; caption style HORMOZI; render the best 5 with score "
        '≥ 70; exports premiere, davinci; SRT captions; template style.captionFont="Inter", '
        "style.uppercase=true"
    ) in text
    assert (
        'note: inbox[0].rules."clients/acme".caption_style: "ACME-BRAND" is not a built-in '
        "caption style; whether it is a template of the workspace was not verified offline"
    ) in text
    assert "nor were caption styles that are not built in" in text
    assert lines[-1] == "config OK"
    assert PASSWORD not in r.out


def test_offline_without_a_password(cfg_path: Path) -> None:
    r = run(cfg_path, offline=True, env={})
    assert r.code == 0
    assert "password: none found (needed to run)" in r.out


def test_bad_config_exits_2_and_lists_every_problem(cfg_path: Path) -> None:
    cfg_path.write_text(
        cfg_path.read_text().replace('video_type = "podcast"', 'video_tpye = "podcast"')
        + "\n[daemon2]\nx = 1\n"
    )
    for offline in (True, False):
        r = run(cfg_path, offline=offline, client_factory=never)
        assert r.code == 2
        assert r.out == ""
        assert r.err.splitlines() == [
            f"bad config {cfg_path}:",
            "  daemon2: unknown key, did you mean daemon?",
            "  inbox[0].rules.podcasts.video_tpye: unknown key, did you mean video_type?",
        ]


def test_missing_config_exits_2(tmp_path: Path) -> None:
    r = run(tmp_path / "none.toml", offline=True)
    assert r.code == 2
    assert "cannot read" in r.err


def test_warnings_are_printed(cfg_path: Path) -> None:
    cfg_path.write_text(cfg_path.read_text().replace('language = "en"', 'language = "xx"'))
    r = run(cfg_path, offline=True)
    assert r.code == 0
    assert 'warning: inbox[0].language: "xx" is not an ISO 639-1 code this version knows' in r.out


def test_the_cli_runs_it(
    cfg_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    assert main(["check", "--offline", "-c", str(cfg_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "config OK"
    monkeypatch.setenv("WATCHD_CONFIG", str(cfg_path.parent / "missing.toml"))
    assert main(["check", "--offline"]) == 2


# ---- online --------------------------------------------------------------------------------------


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.routes[("GET", "/v1/projects/caption-templates")] = lambda r: ok(
        [{"id": "HORMOZI", "name": "Hormozi"}, {"id": "KARAOKE"}]
    )
    fake.routes[("GET", "/v1/templates/")] = lambda r: ok(
        {"templates": [{"id": "t1", "name": "ACME-BRAND"}]}
    )
    return fake


def test_online_ok(cfg_path: Path, api: FakeApi) -> None:
    r = run(cfg_path, offline=False, client_factory=over(api))
    assert r.code == 0, r.err
    assert f'login OK as {EMAIL}; workspace "Studio" (' in r.out
    assert "tier BUSINESS" in r.out
    assert "note:" not in r.out  # ACME-BRAND is a template of the workspace
    assert r.out.splitlines()[-1] == "config OK, login OK"
    assert api.logins == 1


def test_online_an_unknown_caption_style_is_an_error(cfg_path: Path, api: FakeApi) -> None:
    api.routes[("GET", "/v1/templates/")] = lambda r: ok([])
    r = run(cfg_path, offline=False, client_factory=over(api))
    assert r.code == 2
    assert (
        'inbox[0].rules."clients/acme".caption_style: "ACME-BRAND" is neither a built-in caption '
        "style nor a template of the workspace"
    ) in r.err
    assert "config OK" not in r.out


def _with_style(cfg_path: Path, style: str) -> None:
    cfg_path.write_text(
        cfg_path.read_text().replace('caption_style = "HORMOZI"', f'caption_style = "{style}"')
    )


def test_online_a_misspelt_caption_style_names_the_key_and_the_fix(
    cfg_path: Path, api: FakeApi
) -> None:
    _with_style(cfg_path, "HORMOSI")
    r = run(cfg_path, offline=False, client_factory=over(api))
    assert r.code == 2
    assert (
        'inbox[0].rules.podcasts.caption_style: "HORMOSI" is neither a built-in caption style '
        'nor a template of the workspace; did you mean "HORMOZI"?'
    ) in r.err


def test_offline_a_misspelt_caption_style_is_named_as_not_verified(cfg_path: Path) -> None:
    _with_style(cfg_path, "HORMOSI")
    r = run(cfg_path, offline=True)
    assert r.code == 0
    assert (
        'note: inbox[0].rules.podcasts.caption_style: "HORMOSI" is not a built-in caption style '
        '(did you mean "HORMOZI"?); whether it is a template of the workspace was not verified '
        "offline"
    ) in r.out


def test_online_template_listing_failure_is_only_a_note(cfg_path: Path, api: FakeApi) -> None:
    api.routes[("GET", "/v1/templates/")] = lambda r: err(403, "Forbidden")
    r = run(cfg_path, offline=False, client_factory=over(api))
    assert r.code == 0
    assert "note: could not list the workspace's templates: HTTP 403" in r.out


def test_online_bad_password_exits_3(cfg_path: Path, api: FakeApi) -> None:
    r = run(cfg_path, offline=False, env={ENV_PASSWORD: "Wr0ng-password"}, client_factory=over(api))
    assert r.code == 3
    assert r.err.startswith(
        f"cannot log in to {API} as {EMAIL} (password from environment variable {ENV_PASSWORD}): "
    )
    assert "Wr0ng-password" not in r.out + r.err


def test_online_unknown_workspace_exits_3(cfg_path: Path, api: FakeApi) -> None:
    cfg_path.write_text(
        cfg_path.read_text().replace("[carmic]\n", '[carmic]\nworkspace = "Nope"\n')
    )
    r = run(cfg_path, offline=False, client_factory=over(api))
    assert r.code == 3
    assert r.err.startswith("cannot use the workspace: ")
    assert "'Studio'" in r.err  # the workspaces the user does have


def test_online_network_failure_exits_3(cfg_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    r = run(cfg_path, offline=False, client_factory=over(refuse))
    assert r.code == 3
    assert r.err.startswith(f"cannot reach the Carmic API at {API}: ")


def test_online_timeout_exits_3(cfg_path: Path) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    r = run(cfg_path, offline=False, client_factory=over(hang), timeout=0.05)
    assert r.code == 3
    assert r.err == f"no answer from the Carmic API at {API} within 0.05 s\n"


def test_online_client_setup_failure_exits_3(cfg_path: Path) -> None:
    def broken(carmic: CarmicConfig, password: Secret) -> Any:
        raise PermanentError("cannot load the CA file /x.pem: bad")

    r = run(cfg_path, offline=False, client_factory=broken)
    assert r.code == 3
    assert r.err == "cannot set up the Carmic client: cannot load the CA file /x.pem: bad\n"


def test_online_needs_a_password(cfg_path: Path) -> None:
    r = run(cfg_path, offline=False, env={}, client_factory=never)
    assert r.code == 2
    assert "no Carmic password found" in r.err
    assert "WATCHD_CARMIC_PASSWORD" in r.err


def test_default_client_is_a_carmic_client(cfg_path: Path) -> None:
    cfg = load_config(cfg_path, env=ENV)
    client = build_client(cfg.carmic, cfg.carmic.require_password())
    assert isinstance(client, CarmicClient)
    assert client.api_url == API
    asyncio.run(client.aclose())


# ---- the preset line -----------------------------------------------------------------------------


def test_preset_summary() -> None:
    assert preset_summary(Preset()) == (
        "type auto; language auto/single; caption style as the server sets it; render all; "
        "exports none; SRT captions"
    )
    full = Preset(
        video_type="interview",
        language="de",
        language_mode="multi",
        enable_multimodal=True,
        custom_instructions="x" * 50,
        caption_style="KARAOKE",
        render=RenderChoice("best", 0, 3),
        exports=("fcpx",),
        captions=False,
        title="Épisode 12",
        trim_start=60,
        trim_end=None,
    )
    assert preset_summary(full) == (
        f'type interview; language de/multi; multimodal; instructions "{"x" * 39}…"; '
        "trim 60–end; caption style KARAOKE; render the best 3; exports fcpx; no SRT; "
        'title "Épisode 12"'
    )
    assert "render every clip with score ≥ 50" in preset_summary(
        Preset(render=RenderChoice("best", 50, None))
    )
