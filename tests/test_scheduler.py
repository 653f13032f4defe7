from dataclasses import replace

from watchd.ledger.db import JobRow
from watchd.pipeline.scheduler import FairPicker, ProcessingLimit, tier_limit

BASE = JobRow(
    id="j0", inbox="/in", rel_path="x", path="/in/x", rule="", preset="{}", state="probed",
    resume_stage=None, park_reason=None, size=1, mtime_ns=1, inode=1, dev=1, fingerprint="f",
    sha256=None, marker="m", project_id=None, object_key=None, upload_url=None,
    content_type=None, duration=None, progress=0, step=None, bytes_uploaded=0, attempts=0,
    next_attempt_at=0, error_code=None, error=None, duplicate_of=None, outbox_dir=None,
    disposed_to=None, created_at=0, updated_at=0, finished_at=None,
)  # fmt: skip


def job(i: int, rule: str) -> JobRow:
    return replace(BASE, id=f"j{i}", rule=rule, created_at=float(i))


def test_round_robin_across_rules_and_cursor_persists() -> None:
    waiting = [job(1, "a"), job(2, "a"), job(3, "a"), job(4, "b"), job(5, "c")]
    picker = FairPicker()
    assert [j.id for j in picker.pick(waiting, 2)] == ["j1", "j4"]
    rest = [j for j in waiting if j.id not in ("j1", "j4")]
    assert [j.id for j in picker.pick(rest, 1)] == ["j5"]  # "c" comes after "b"
    rest = [j for j in rest if j.id != "j5"]
    assert [j.id for j in picker.pick(rest, None)] == ["j2", "j3"]


def test_no_capacity_picks_nothing() -> None:
    assert FairPicker().pick([job(1, "a")], 0) == []


def test_limits() -> None:
    assert tier_limit("business") == 2
    assert tier_limit("ENTERPRISE") is None
    assert tier_limit(None) is None
    lim = ProcessingLimit(tier=2)
    assert lim.effective() == 2
    lim.learn(0)
    assert lim.effective() == 2
    lim.learn(1)
    assert lim.effective() == 1
    assert ProcessingLimit(configured=3, tier=1).effective() == 3
    assert ProcessingLimit().effective() is None
