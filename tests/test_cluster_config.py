"""``[cluster]`` and ``[[inbox]] name``: parsed with the precision of the rest of the config, the
database password never shown; ``check`` checks the database (tests/cluster/test_ops.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_config import base_doc, load, problems, write
from watchd.cli import main
from watchd.cluster_config import default_node
from watchd.redact import redact

URL = "postgresql://watchd@db.example.com:5432/watchd"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    for name, value in (("password", "Sup3r-secret-pw"), ("db-password", "Db-s3cret-pw")):
        secret = tmp_path / name
        secret.write_text(value + "\n")
        secret.chmod(0o600)
    return tmp_path


def cluster_doc(site: Path, **cluster: Any) -> dict[str, Any]:
    doc = base_doc(site)
    doc["cluster"] = {"database": URL, **cluster}
    doc["inbox"][0]["name"] = "studio-a"
    return doc


def test_a_full_cluster_table_loads(site: Path) -> None:
    doc = cluster_doc(
        site, password_file=str(site / "db-password"), node="suite-3", lease_seconds=30
    )
    cfg = load(site, doc)
    c = cfg.cluster
    assert c is not None
    assert (c.database, c.node, c.lease_seconds) == (URL, "suite-3", 30)
    assert c.password is not None and c.password.reveal() == "Db-s3cret-pw"
    assert c.password_source == f"password_file {site / 'db-password'}"
    assert cfg.inboxes[0].name == "studio-a"
    assert "Db-s3cret-pw" not in repr(cfg)


def test_defaults_the_host_name_and_a_minute(site: Path) -> None:
    c = load(site, cluster_doc(site)).cluster
    assert c is not None
    assert (c.node, c.lease_seconds, c.password, c.password_source) == (
        default_node(),
        60,
        None,
        "",
    )


def test_the_systemd_credential_is_the_fallback(site: Path) -> None:
    creds = site / "creds"
    creds.mkdir()
    (creds / "database-password").write_text("Cred-pw-123\n")
    (creds / "database-password").chmod(0o600)
    cfg = load(site, cluster_doc(site), check_paths=True)
    assert cfg.cluster is not None and cfg.cluster.password is None  # env={} in load()
    from watchd.config import load_config

    cfg = load_config(write(site, cluster_doc(site)), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.cluster is not None and cfg.cluster.password is not None
    assert cfg.cluster.password.reveal() == "Cred-pw-123"
    assert cfg.cluster.password_source == "the systemd credential database-password"


def test_no_cluster_no_names_needed(site: Path) -> None:
    cfg = load(site, base_doc(site))
    assert cfg.cluster is None and cfg.inboxes[0].name == "inbox"  # the folder's name


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ({"databse": URL}, "cluster.databse: unknown key, did you mean database?"),
        ({"lease_second": 5}, "cluster.lease_second: unknown key, did you mean lease_seconds?"),
        ({"database": ""}, "cluster.database: must not be empty"),
        ({"database": "mysql://db/x"}, "cluster.database: must be a postgresql:// URL"),
        ({"database": "postgresql://db.example.com"}, "must name the database after the host"),
        ({"lease_seconds": 5}, "cluster.lease_seconds: must be ≥ 10 (got integer 5)"),
        ({"lease_seconds": "60"}, "cluster.lease_seconds: must be a number (got string"),
        ({"node": "suite 3"}, "cluster.node: must be letters, digits"),
        ({"password_file": "missing"}, "cluster.password_file: cannot read"),
    ],
)
def test_each_mistake_is_named(site: Path, cluster: dict[str, Any], expected: str) -> None:
    doc = cluster_doc(site, **cluster)
    if "databse" in cluster:
        del doc["cluster"]["database"]
    found = problems(site, doc)
    assert any(expected in p for p in found), found


def test_cluster_must_be_a_table(site: Path) -> None:
    doc = base_doc(site)
    doc["cluster"] = "yes"
    assert any(p.startswith("cluster: must be a table") for p in problems(site, doc))


def test_inbox_names_are_required_with_cluster_and_unique(site: Path) -> None:
    doc = cluster_doc(site)
    (site / "inbox2").mkdir()
    doc["inbox"].append({"path": str(site / "inbox2"), "outbox": str(site / "outbox2")})
    # The folder's name, the default, is not enough: it may differ from host to host.
    assert "inbox[1].name: is required with [cluster]" in problems(site, doc)[0]
    doc["inbox"][1]["name"] = "studio-a"
    assert problems(site, doc) == ['inbox[1].name: "studio-a" is already the name of inbox[0]']
    del doc["cluster"]  # names written are unique without [cluster] too
    assert problems(site, doc) == ['inbox[1].name: "studio-a" is already the name of inbox[0]']
    doc["inbox"][1]["nmae"] = "x"
    assert "inbox[1].nmae: unknown key, did you mean name?" in problems(site, doc)


def test_without_cluster_default_names_may_repeat(site: Path) -> None:
    """Two inboxes in folders of the same name, named after them (notifications only)."""
    doc = base_doc(site)
    for sub in ("a", "b"):
        (site / sub / "inbox").mkdir(parents=True)
    doc["inbox"] = [
        {"path": str(site / sub / "inbox"), "outbox": str(site / sub / "out")} for sub in "ab"
    ]
    assert [i.name for i in load(site, doc).inboxes] == ["inbox", "inbox"]


def test_a_password_in_the_url_is_never_shown(site: Path) -> None:
    secret_url = "mysql://watchd:Url-s3cret-pw@db.example.com/watchd"
    doc = cluster_doc(site, database=secret_url, node="bad node")
    doc["cluster"]["nodee"] = secret_url
    doc["daemon"]["log_level"] = secret_url  # pasted into the wrong key: quoted back, scrubbed
    found = problems(site, doc)
    text = "\n".join(found)
    assert "Url-s3cret-pw" not in text
    assert "mysql://watchd:***@db.example.com/watchd" in text
    assert "Url-s3cret-pw" not in redact("connecting with Url-s3cret-pw")


def test_the_password_file_contents_are_never_shown(site: Path) -> None:
    doc = cluster_doc(site, password_file=str(site / "db-password"))
    doc["daemon"]["log_level"] = "Db-s3cret-pw"
    text = "\n".join(problems(site, doc))
    assert "log_level" in text and "Db-s3cret-pw" not in text


# ---- check takes [cluster] (run too: tests/e2e/test_cluster_basic.py) ---------------------------


@pytest.mark.parametrize("with_cluster", [False, True])
def test_check_is_not_refused(
    site: Path, with_cluster: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(site, cluster_doc(site) if with_cluster else base_doc(site))
    assert main(["check", "--offline", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert "not supported" not in captured.err
    assert ("cluster  node " in captured.out) is with_cluster


def test_a_reload_names_a_changed_cluster_table_only_when_it_changed(site: Path) -> None:
    from watchd.daemon import restart_only_changes

    same = cluster_doc(site, password_file=str(site / "db-password"), node="suite-3")
    # Read twice: two password objects with the same password are no change.
    assert restart_only_changes(load(site, same), load(site, same)) == []
    moved = cluster_doc(site, password_file=str(site / "db-password"), node="suite-4")
    assert restart_only_changes(load(site, same), load(site, moved)) == ["[cluster]"]


def test_one_host_needs_no_postgresql_driver() -> None:
    """Without [cluster] nothing imports psycopg (the cluster extra may be missing)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import watchd.cli, watchd.daemon, watchd.pipeline.runner, watchd.status_view\n"
        "import watchd.web.app, watchd.notify.service\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
