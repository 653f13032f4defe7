"""The outbox pieces driven together the way a delivery uses them, including a crash."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from watchd.carmic.models import Word
from watchd.outbox import atomic, bundles, delivery, manifest, names, srt


def bundle(path: Path) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Project.prproj", "<xml/>")
        zf.writestr("../../../escape.txt", "nope")
        zf.writestr("media/clip.mp4", b"video")
    path.write_bytes(buf.getvalue())
    return path


def deliver(tmp: Path, folder: Path, titles: list[str]) -> dict[str, object]:
    """One delivery of a clip per title, as the pipeline does it: files first, manifest last."""
    atomic.clean_stale_temps(folder)
    taken: set[str] = set()
    clips = []
    skipped = []
    for rank, title in enumerate(titles, start=1):
        base = names.unique_name(taken, names.clip_basename(rank, title), ext="")
        taken.add(base)
        rendered = tmp / f"render-{rank}.mp4"
        rendered.write_bytes(f"clip {rank}".encode())
        atomic.copy_into_place(rendered, folder / f"{base}.mp4")
        words = [Word("Hello", 100.2, 100.6), Word("world.", 100.7, 101.0)]
        text = srt.words_to_srt(srt.to_clip_relative(words, 100.0, 110.0))
        atomic.atomic_write_text(folder / f"{base}.srt", text)
        rel_dir = f"exports/{base}/premiere/"
        res = bundles.extract_bundle(bundle(tmp / f"b{rank}.zip"), folder / rel_dir)
        skipped += [manifest.Skipped(f"bundle member {s.name}", s.reason) for s in res.skipped]
        clips.append(
            manifest.ClipEntry(
                id=f"c{rank}",
                title=title,
                start_time=100.0,
                end_time=110.0,
                virality_score=90 - rank,
                file=f"{base}.mp4",
                captions=f"{base}.srt",
                sha256=hashlib.sha256(f"clip {rank}".encode()).hexdigest(),
                exports=[manifest.ExportEntry("premiere", rel_dir)],
            )
        )
    doc = manifest.build_manifest(
        status="delivered",
        source=manifest.SourceInfo("ep12.mp4", 5, None),
        rule="podcasts",
        project_id="p1",
        clips=clips,
        skipped=skipped,
        error=None,
        completed_at="2026-11-28T12:00:00Z",
        job_id="j-1",
    )
    manifest.write_manifest(folder, doc)
    return doc


def test_a_whole_delivery_with_hostile_titles(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    src = inbox / "podcasts" / "ep12.mp4"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"source")
    folder = delivery.choose_outbox_folder(tmp_path / "outbox", PurePosixPath("podcasts"), "ep12")
    doc = deliver(tmp_path, folder, ["../../etc/passwd", "CON", "Intro: part 1?", "🎬" * 200])
    assert delivery.verify_delivery(folder, doc) == []
    listing = sorted(os.listdir(folder))
    assert listing[:4] == [
        "01 - ..-..-etc-passwd.mp4",
        "01 - ..-..-etc-passwd.srt",
        "02 - CON.mp4",
        "02 - CON.srt",
    ]
    assert "03 - Intro- part 1.mp4" in listing
    assert not any(n.startswith(".") for n in listing)
    assert doc["skipped"] and "escape" in str(doc["skipped"])
    srt_text = (folder / "01 - ..-..-etc-passwd.srt").read_text()
    assert srt_text.startswith("1\n00:00:00,200 --> 00:00:01,000\nHello world.\n")
    moved = delivery.dispose_source(src, inbox, "podcasts", "move", "done")
    assert moved == inbox / "_done" / "podcasts" / "ep12.mp4"
    again = delivery.choose_outbox_folder(tmp_path / "outbox", PurePosixPath("podcasts"), "ep12")
    assert again.name == "ep12 (2)"


def test_a_crash_mid_delivery_leaves_no_manifest_and_a_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = delivery.choose_outbox_folder(tmp_path / "outbox", PurePosixPath(""), "ep")
    real = os.replace
    calls = {"n": 0}

    def crash_on_third(a: object, b: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            # the process dies: the temporary file stays behind, as after a power cut
            raise KeyboardInterrupt
        real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", crash_on_third)
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        deliver(tmp_path, folder, ["A", "B"])
    monkeypatch.undo()
    assert manifest.read_manifest(folder) is None  # not complete: no manifest
    assert [p for p in folder.rglob("*") if atomic.is_tmp_name(p.name)]
    doc = deliver(tmp_path, folder, ["A", "B"])
    assert delivery.verify_delivery(folder, doc) == []
    leftovers = [p for p in folder.rglob("*") if atomic.is_tmp_name(p.name)]
    assert leftovers == []
