"""manifest.json: the contract's shape, key order, paths, atomic writing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import watchd
from watchd.outbox.manifest import (
    MANIFEST_NAME,
    ClipEntry,
    ErrorInfo,
    ExportEntry,
    ManifestError,
    Skipped,
    SourceInfo,
    build_manifest,
    path_problems,
    read_manifest,
    validate_paths,
    write_manifest,
)

# The documented manifest shape (docs/outbox.md), with placeholder values.
CONTRACT_EXAMPLE = json.loads(
    """
{
  "status": "delivered",
  "source": {"name": "ep12.mp4", "size": 123, "sha256": "..."},
  "rule": "podcasts",
  "project_id": "...",
  "clips": [
    {"id": "...", "title": "...", "start_time": 1.0, "end_time": 9.5, "virality_score": 87,
     "reasoning": "...", "file": "01 - Title.mp4", "captions": "01 - Title.srt",
     "sha256": "...", "exports": [{"format": "premiere", "path": "exports/01 - Title/premiere/"}]}
  ],
  "skipped": [{"what": "export davinci", "reason": "..."}],
  "error": null,
  "completed_at": "2026-11-28T12:00:00Z"
}
"""
)
EXTRA_KEYS = ["watchd_version", "job_id"]


def example_with_dataclasses() -> dict[str, object]:
    return build_manifest(
        status="delivered",
        source=SourceInfo("ep12.mp4", 123, "..."),
        rule="podcasts",
        project_id="...",
        clips=[
            ClipEntry(
                id="...",
                title="...",
                start_time=1.0,
                end_time=9.5,
                virality_score=87.0,
                reasoning="...",
                file="01 - Title.mp4",
                captions="01 - Title.srt",
                sha256="...",
                exports=[ExportEntry("premiere", "exports/01 - Title/premiere/")],
            )
        ],
        skipped=[Skipped("export davinci", "...")],
        error=None,
        completed_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        job_id="j-1",
    )


def test_shape_matches_the_contract_exactly() -> None:
    doc = example_with_dataclasses()
    assert {k: v for k, v in doc.items() if k not in EXTRA_KEYS} == CONTRACT_EXAMPLE
    assert list(doc) == [*CONTRACT_EXAMPLE, *EXTRA_KEYS]
    assert list(doc["clips"][0]) == list(CONTRACT_EXAMPLE["clips"][0])  # type: ignore[index]
    assert doc["watchd_version"] == watchd.__version__
    assert doc["job_id"] == "j-1"
    # the same bytes as the example would serialise to (87, not 87.0)
    assert '"virality_score": 87,' in json.dumps(doc)


def test_mappings_are_accepted_like_dataclasses() -> None:
    clip = dict(CONTRACT_EXAMPLE["clips"][0])
    clip["thumbnail"] = "01 - Title.jpg"
    doc = build_manifest(
        status="delivered",
        source={"sha256": "...", "name": "ep12.mp4", "size": 123},
        rule="podcasts",
        project_id="...",
        clips=[clip],
        skipped=[{"reason": "...", "what": "export davinci"}],
        error=None,
        completed_at="2026-11-28T12:00:00Z",
    )
    assert list(doc["source"]) == ["name", "size", "sha256"]
    assert list(doc["skipped"][0]) == ["what", "reason"]
    assert list(doc["clips"][0])[-1] == "thumbnail"  # extras after the contract's keys
    assert "job_id" not in doc and "duplicate_of" not in doc


def test_failed_and_duplicate() -> None:
    doc = build_manifest(
        status="failed",
        source=SourceInfo("bad.mp4", 10, None),
        rule="",
        project_id=None,
        clips=[],
        skipped=[],
        error=ErrorInfo("probe_invalid", "not a video"),
        completed_at=datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
    )
    assert doc["error"] == {"code": "probe_invalid", "message": "not a video"}
    assert doc["completed_at"] == "2026-01-01T12:00:00Z"
    dup = build_manifest(
        status="delivered",
        source=SourceInfo("copy.mp4", 10, "ab"),
        rule="",
        project_id="p",
        clips=[],
        skipped=[],
        error=None,
        completed_at=datetime(2026, 1, 1),  # naive: UTC
        duplicate_of={"job_id": "j-1", "source": "ep.mp4", "outbox_folder": "ep"},
    )
    assert dup["duplicate_of"]["job_id"] == "j-1"
    assert dup["completed_at"] == "2026-01-01T00:00:00Z"


def test_bad_input_is_refused() -> None:
    kw: dict[str, object] = dict(
        source=SourceInfo("a", 1, None),
        rule="",
        project_id=None,
        clips=[],
        skipped=[],
        error=None,
        completed_at="x",
    )
    with pytest.raises(ManifestError, match="status"):
        build_manifest(status="done", **kw)  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match="needs an error"):
        build_manifest(status="failed", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    ["../x.mp4", "/etc/passwd", "C:/x", "a\\..\\b", "exports/../../x/", "", "a/../../b"],
)
def test_paths_outside_the_folder_are_refused(bad: str) -> None:
    clip = ClipEntry("c", "t", 0.0, 1.0, 50, file=bad)
    with pytest.raises(ManifestError):
        build_manifest(
            status="delivered",
            source=SourceInfo("a", 1, None),
            rule="",
            project_id="p",
            clips=[clip],
            skipped=[],
            error=None,
            completed_at="x",
        )


def test_non_finite_numbers_become_null() -> None:
    doc = build_manifest(
        status="delivered",
        source=SourceInfo("a", 1, None),
        rule="",
        project_id="p",
        clips=[ClipEntry("c", "t", float("nan"), 1.0, float("inf"))],
        skipped=[],
        error=None,
        completed_at="x",
    )
    assert doc["clips"][0]["start_time"] is None
    assert doc["clips"][0]["virality_score"] is None
    json.dumps(doc, allow_nan=False)


def test_write_read_round_trip(tmp_path: Path) -> None:
    doc = example_with_dataclasses()
    path = write_manifest(tmp_path, doc)
    assert path == tmp_path / MANIFEST_NAME
    assert read_manifest(tmp_path) == doc
    assert os.listdir(tmp_path) == [MANIFEST_NAME]
    assert path.read_text("utf-8").endswith("}\n")


def test_read_missing_and_broken(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    (tmp_path / MANIFEST_NAME).write_text("{half")
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        read_manifest(tmp_path)


def test_validate_paths_follows_links_on_disk(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "exports").mkdir(parents=True)
    (folder / "exports" / "evil").symlink_to(tmp_path)
    doc = {"clips": [{"file": "a.mp4", "exports": [{"format": "p", "path": "exports/evil/"}]}]}
    problems = path_problems(doc, folder)
    assert problems == ["clips[0].exports[0].path 'exports/evil/': leads outside the folder"]
    with pytest.raises(ManifestError):
        validate_paths(folder, doc)
    with pytest.raises(ManifestError):
        write_manifest(folder, doc)
    assert not (folder / MANIFEST_NAME).exists()
    validate_paths(folder, {"clips": [{"file": "a.mp4", "captions": "sub/a.srt"}]})


def test_links_are_judged_wherever_they_sit_in_the_path(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    (folder / "inside").mkdir(parents=True)
    (folder / "stay").symlink_to(folder / "inside")  # a link that stays in the folder
    (folder / "mid").symlink_to(tmp_path)  # a directory link halfway
    (folder / "leaf.mp4").symlink_to(tmp_path / "elsewhere.mp4")  # the file itself
    doc = {
        "clips": [
            {"file": "stay/a.mp4", "captions": "mid/deeper/a.srt", "thumbnail": "leaf.mp4"},
            {"file": "not/there/yet.mp4"},
        ]
    }
    assert path_problems(doc, folder) == [
        "clips[0].captions 'mid/deeper/a.srt': leads outside the folder",
        "clips[0].thumbnail 'leaf.mp4': leads outside the folder",
    ]


def _schema_problems(doc: object) -> list[str]:
    import jsonschema

    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]


def test_the_published_schema_takes_what_build_manifest_makes() -> None:
    from watchd.config import Preset

    sha = "ab" * 32
    delivered = build_manifest(
        status="delivered",
        source={"name": "ep.mp4", "size": 10, "sha256": sha},
        rule="podcasts",
        project_id="p1",
        clips=[
            {
                "id": "c1",
                "title": "T",
                "start_time": 1.0,
                "end_time": 2.5,
                "virality_score": 87.0,
                "reasoning": "r",
                "file": "01 - T.mp4",
                "captions": None,
                "sha256": sha,
                "thumbnail": "01 - T.jpg",
                "exports": [{"format": "premiere", "path": "exports/01 - T/premiere/"}],
            }
        ],
        skipped=[{"what": "clip U", "reason": "beyond max_clips 1", "clip_id": "c2"}],
        error=None,
        completed_at="2026-11-28T12:00:00Z",
        job_id="j1",
        preset=Preset(caption_style="HORMOZI").to_json(),
    )
    assert delivered["preset"]["caption_style"] == "HORMOZI"
    assert _schema_problems(delivered) == []
    failed = build_manifest(
        status="failed",
        source={"name": "ep.mp4", "size": 10, "sha256": None},
        rule="",
        project_id=None,
        clips=[],
        skipped=[],
        error={"code": "preset_invalid", "message": "m"},
        completed_at="2026-11-28T12:00:00Z",
    )
    assert _schema_problems(failed) == []
    assert _schema_problems({**failed, "error": None})  # failed needs its error
    assert _schema_problems({**delivered, "clips": [{**delivered["clips"][0], "file": "../x"}]})
    assert _schema_problems({**delivered, "status": "done"})
