"""systemd/carmic-watchd.service: systemd-analyze verify and security, and the required keys.

`systemd-analyze verify` insists that ExecStart's binary exists, and /opt/carmic-watchd is not
installed in CI: the tests verify a copy of the unit whose ExecStart points at a stub
executable in tmp_path, which is the only line they change. Drop-ins in a `<unit>.d/` folder
next to the unit file are read by both verify and security, exactly as from
/etc/systemd/system.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.service.unitfile import (
    DROPIN,
    MAX_EXPOSURE,
    UNIT,
    entries,
    exposure,
    relocated_unit,
    run_analyze,
    stub_executable,
    values,
)


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    return tmp_path / "system"


@pytest.fixture
def unit_copy(tmp_path: Path, unit_dir: Path) -> Path:
    return relocated_unit(unit_dir, stub_executable(tmp_path / "bin"))


def add_dropin(unit: Path, text: str, name: str = "nas-paths.conf") -> Path:
    folder = unit.parent / (unit.name + ".d")
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def uncomment_examples(text: str) -> str:
    """The drop-in with its commented-out example settings switched on."""
    return re.sub(r"^#(?=[A-Z][A-Za-z]+=)", "", text, flags=re.M)


# --- verify -------------------------------------------------------------------------------


def test_verify_passes_silently(unit_copy: Path) -> None:
    result = run_analyze("verify", str(unit_copy))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_verify_with_the_nas_dropin(unit_copy: Path) -> None:
    add_dropin(unit_copy, DROPIN.read_text())
    result = run_analyze("verify", str(unit_copy))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_with_the_dropin_examples_switched_on(unit_copy: Path) -> None:
    text = uncomment_examples(DROPIN.read_text())
    assert "\nSupplementaryGroups=" in text and "\nProtectHome=read-only" in text
    add_dropin(unit_copy, text)
    result = run_analyze("verify", str(unit_copy))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_reads_dropins_so_the_checks_above_mean_something(unit_copy: Path) -> None:
    add_dropin(unit_copy, "[Service]\nReadWritePathz=/srv\n", name="typo.conf")
    result = run_analyze("verify", str(unit_copy))
    assert "ReadWritePathz" in result.stderr


def test_verify_needs_the_stub_because_the_real_path_is_absent(unit_dir: Path) -> None:
    # Why the copy: the unmodified unit names a binary that only exists after installation.
    if Path("/opt/carmic-watchd/bin/watchd").exists():
        pytest.skip("carmic-watchd is installed on this machine")
    unit_dir.mkdir(parents=True)
    original = unit_dir / UNIT.name
    shutil.copy(UNIT, original)
    result = run_analyze("verify", str(original))
    assert "/opt/carmic-watchd/bin/watchd" in result.stderr


# --- security -----------------------------------------------------------------------------


def security(unit: Path) -> tuple[float, str]:
    result = run_analyze("security", "--offline=yes", "--no-pager", str(unit))
    output = result.stdout + result.stderr
    return exposure(output), output


def test_exposure_is_low(unit_copy: Path) -> None:
    level, output = security(unit_copy)
    assert level <= MAX_EXPOSURE, output


def test_exposure_stays_low_with_the_dropin_examples(unit_copy: Path) -> None:
    add_dropin(unit_copy, uncomment_examples(DROPIN.read_text()))
    level, output = security(unit_copy)
    assert level <= MAX_EXPOSURE, output


def test_the_units_own_comment_quotes_its_exposure(unit_copy: Path) -> None:
    level, _ = security(unit_copy)
    assert f"rates this unit about {level:.1f}" in UNIT.read_text()


def test_security_still_allows_the_network(unit_copy: Path) -> None:
    _, output = security(unit_copy)
    assert re.search(r"✗ RestrictAddressFamilies=~AF_\(INET\|INET6\)", output)
    assert re.search(r"✓ RestrictAddressFamilies=~AF_NETLINK", output)
    assert re.search(r"✗ PrivateNetwork=", output)


# --- required keys ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unit_text() -> str:
    return UNIT.read_text()


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        (
            "Service",
            "ExecStart",
            "/opt/carmic-watchd/bin/watchd run -c /etc/carmic-watchd/config.toml",
        ),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartPreventExitStatus", "2 3"),
        ("Service", "StateDirectory", "carmic-watchd"),
        ("Service", "LoadCredential", "carmic-password:/etc/carmic-watchd/password"),
        ("Service", "User", "carmic-watchd"),
        ("Service", "Environment", "WATCHD_CONFIG=/etc/carmic-watchd/config.toml"),
        ("Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "MemoryDenyWriteExecute", "yes"),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_required_key(unit_text: str, section: str, key: str, expected: str) -> None:
    assert expected in values(unit_text, section, key)


def test_no_dynamic_user(unit_text: str) -> None:
    # A stable uid for NAS permissions: see docs/install.md.
    assert values(unit_text, "Service", "DynamicUser") in ([], ["no"])


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_watchdog_and_timeouts(unit_text: str) -> None:
    (watchdog,) = values(unit_text, "Service", "WatchdogSec")
    (stop,) = values(unit_text, "Service", "TimeoutStopSec")
    assert 10 <= seconds(watchdog) <= 300
    # The contract's graceful stop takes up to 10 s; SIGKILL must not cut it short.
    assert 15 <= seconds(stop) <= 60


def test_config_path_is_the_same_everywhere(unit_text: str) -> None:
    (start,) = values(unit_text, "Service", "ExecStart")
    config = start.split("-c ", 1)[1]
    assert f"WATCHD_CONFIG={config}" in values(unit_text, "Service", "Environment")


def test_every_line_parses(unit_text: str) -> None:
    sections = {s for s, _, _ in entries(unit_text)}
    assert sections == {"Unit", "Service", "Install"}


def test_dropin_names_paths_and_mounts() -> None:
    text = DROPIN.read_text()
    assert values(text, "Unit", "RequiresMountsFor")
    rw = values(text, "Service", "ReadWritePaths")
    assert rw and all(p.startswith("-/") for p in rw)


def test_a_missing_systemd_analyze_fails_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="systemd-analyze is missing"):
        run_analyze("--version")
