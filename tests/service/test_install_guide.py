"""docs/install.md: its CI-marked commands run, its wheel builds and installs, and it covers every
step of an installation.

Blocks preceded by an ``<!-- ci: ... -->`` comment run here, as bash with ``set -euo pipefail``,
from the repository root. The guide talks about /etc/systemd/system and /opt/carmic-watchd; the
test relocates those under a temporary root, in the commands and in the unit they install, and
puts the virtualenv's own ``watchd`` at <root>/opt/carmic-watchd/bin/watchd. Nothing outside
tmp_path is touched and no root rights are needed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.service.unitfile import MAX_EXPOSURE, REPO, UNIT, exposure, systemd_analyze

GUIDE = REPO / "docs" / "install.md"
CI_BLOCK = re.compile(r"^<!-- ci:[^>]*-->\n```(?:sh|bash)\n(.*?)^```", re.M | re.S)
ROOTED = ("/etc/", "/opt/carmic-watchd", "/var/lib/carmic-watchd", "/srv/nas/carmic")
EXAMPLE = REPO / "config.example.toml"


def ci_blocks(text: str) -> list[str]:
    return CI_BLOCK.findall(text)


def relocate(text: str, root: Path) -> str:
    """Absolute install paths → the same paths under ``root`` (each path rewritten once)."""
    pattern = re.compile(r"(?<![\w.\-/])(" + "|".join(re.escape(p) for p in ROOTED) + ")")
    return pattern.sub(lambda m: f"{root}{m.group(1)}", text)


def fake_install(root: Path) -> None:
    """A machine after §1-§5 of the guide: /etc/systemd/system exists (systemd is installed),
    <root>/opt/carmic-watchd/bin/watchd runs, the NAS share is mounted at /srv/nas/carmic, and
    /etc/carmic-watchd/config.toml is the example config (§4; `install -o root -g
    carmic-watchd` needs root, so the test copies it)."""
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for folder in ("inbox", "outbox"):
        (root / "srv" / "nas" / "carmic" / folder).mkdir(parents=True)
    config_dir = root / "etc" / "carmic-watchd"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(relocate(EXAMPLE.read_text(), root))
    (config_dir / "config.toml").chmod(0o640)
    bin_dir = root / "opt" / "carmic-watchd" / "bin"
    bin_dir.mkdir(parents=True)
    watchd = shutil.which("watchd", path=str(Path(sys.executable).parent))
    assert watchd, "the virtualenv has no watchd entry point (pip install -e .)"
    (bin_dir / "watchd").symlink_to(watchd)


def relocate_installed_units(root: Path) -> None:
    for path in (root / "etc" / "systemd" / "system").rglob("*"):
        if path.is_file() and path.suffix in (".service", ".conf"):
            path.write_text(relocate(path.read_text(), root))


def run_block(block: str, root: Path) -> subprocess.CompletedProcess[str]:
    systemd_analyze()  # fail, not skip, when systemd-analyze is missing
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", relocate(block, root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_the_guide_has_ci_blocks() -> None:
    blocks = ci_blocks(GUIDE.read_text())
    assert len(blocks) >= 3
    joined = "\n".join(blocks)
    assert "systemd-analyze verify" in joined
    assert "systemd-analyze security" in joined
    assert "watchd check --offline -c /etc/carmic-watchd/config.toml" in joined


def test_relocate() -> None:
    root = Path("/tmp/r")
    assert (
        relocate("install x /etc/systemd/system/a", root) == "install x /tmp/r/etc/systemd/system/a"
    )
    assert relocate("ExecStart=/opt/carmic-watchd/bin/watchd run", root) == (
        "ExecStart=/tmp/r/opt/carmic-watchd/bin/watchd run"
    )
    assert relocate("systemd/carmic-watchd.service /etc/", root) == (
        "systemd/carmic-watchd.service /tmp/r/etc/"
    )
    assert relocate(relocate("/etc/x", root), root) == "/tmp/r/etc/x"


def test_ci_blocks_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fake_install(root)
    outputs = []
    for block in ci_blocks(GUIDE.read_text()):
        relocate_installed_units(root)
        result = run_block(block, root)
        assert result.returncode == 0, (
            f"{block}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        # verify is silent when all is well; any warning is a failure of the guide or the unit
        assert result.stderr == "", f"{block}\nstderr:\n{result.stderr}"
        outputs.append(result.stdout)
    installed = root / "etc" / "systemd" / "system" / UNIT.name
    assert installed.is_file()
    assert (installed.parent / (UNIT.name + ".d") / "nas-paths.conf").is_file()
    assert exposure("\n".join(outputs)) <= MAX_EXPOSURE
    report = "\n".join(outputs)
    # watchd check --offline read the installed config and showed what it will do.
    assert f"inbox[0] {root}/srv/nas/carmic/inbox " in report, report
    assert "config OK" in report


@pytest.mark.parametrize(
    "needle",
    [
        "useradd --system",
        "python3 -m venv /opt/carmic-watchd",
        "/opt/carmic-watchd/bin/pip wheel --no-deps --wheel-dir dist .",
        "/usr/local/src/carmic-watchd",
        "libsystemd-dev",
        "pkg-config",
        "gcc",
        "python3-dev",
        "install -m 0600 -o root -g root /dev/null /etc/carmic-watchd/password",
        "/etc/systemd/system/carmic-watchd.service.d/nas-paths.conf",
        "ReadWritePaths=",
        "RequiresMountsFor=",
        "systemctl daemon-reload",
        "systemctl enable --now carmic-watchd",
        "systemctl status carmic-watchd",
        "watchd status",
        "journalctl -u carmic-watchd JOB_ID=",
        "watchd check --offline -c /etc/carmic-watchd/config.toml",
        "DynamicUser",
        "MemoryDenyWriteExecute",
    ],
)
def test_the_guide_covers(needle: str) -> None:
    assert needle in GUIDE.read_text()


def test_the_guide_matches_the_unit() -> None:
    guide, unit = GUIDE.read_text(), UNIT.read_text()
    for path in ("/etc/carmic-watchd/password", "/etc/carmic-watchd/config.toml"):
        assert path in unit and path in guide
    assert "LoadCredential=carmic-password:/etc/carmic-watchd/password" in guide
    assert "User=carmic-watchd" in unit and "carmic-watchd" in guide


# ---- §3: the wheel built from the checkout ------------------------------------------------------

WHEEL_BLOCK = re.compile(r"^<!-- wheel:[^>]*-->\n```(?:sh|bash)\n(.*?)^```", re.M | re.S)
PIP = "/opt/carmic-watchd/bin/pip"
# What a checkout holds that a build must not see: local virtualenvs, caches, earlier builds.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def wheel_name() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return f"carmic_watchd-{version}-py3-none-any.whl"


def wheel_block() -> list[list[str]]:
    blocks = WHEEL_BLOCK.findall(GUIDE.read_text())
    assert len(blocks) == 1, "docs/install.md §3 must have one <!-- wheel: --> block"
    return [shlex.split(line) for line in blocks[0].splitlines() if line.strip()]


def test_the_guide_installs_from_a_checkout_not_an_index() -> None:
    guide = GUIDE.read_text()
    assert "pip install 'carmic-watchd" not in guide  # the package is not on any index
    assert wheel_block() == [
        ["cd", "/usr/local/src/carmic-watchd"],
        ["python3", "-m", "venv", "/opt/carmic-watchd"],
        [PIP, "wheel", "--no-deps", "--wheel-dir", "dist", "."],
        [PIP, "install", f"dist/{wheel_name()}[systemd]"],
    ]
    # Every wheel the guide names (install and upgrade) is the one this checkout builds.
    named = set(re.findall(r"carmic_watchd-[0-9][^\s\[']+\.whl", guide))
    assert named == {wheel_name()}, named


def test_the_guides_wheel_builds_and_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    """§3 for real, but offline: the checkout (a copy) builds the wheel the guide names with the
    guide's own `pip wheel` line; the wheel goes into a new virtualenv without its dependencies
    (they come from this test's environment through a .pth file, so nothing is downloaded), and
    the `watchd` it installs runs from that virtualenv."""
    src = tmp_path / "carmic-watchd"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    build = next(cmd for cmd in wheel_block() if cmd[:2] == [PIP, "wheel"])
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run = subprocess.run(
        [*pip, *build[1:]], cwd=src, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    wheel = src / "dist" / wheel_name()
    assert sorted(p.name for p in (src / "dist").iterdir()) == [wheel.name]
    with zipfile.ZipFile(wheel) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(info).decode()
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
        assert "watchd/py.typed" in zf.namelist()
    assert "Name: carmic-watchd" in metadata
    assert "Provides-Extra: systemd" in metadata  # the guide's [systemd]
    assert re.search(r"Requires-Dist: systemd-python.*extra == .systemd.", metadata)
    assert "watchd = watchd.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    run = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "zz_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")

    watchd = venv / "bin" / "watchd"
    version = subprocess.run(
        [watchd, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"watchd {wheel_name().split('-')[1]}"
    where = subprocess.run(
        [python, "-c", "import watchd; print(watchd.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(site), where  # the installed wheel, not this checkout

    root = tmp_path / "root"
    fake_install(root)
    check = subprocess.run(
        [watchd, "check", "--offline", "-c", root / "etc" / "carmic-watchd" / "config.toml"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "config OK" in check.stdout
