"""A file that probes as truncated may be one whose writer paused: it is held, looked at again
after a growing grace, and fails only once it stayed unchanged for ``hold_seconds``."""

from __future__ import annotations

from tests.pipeline.conftest import World


def _write_half(world: World, name: str = "half.mp4") -> tuple[bytes, int]:
    whole = world.samples[0].read_bytes()
    (world.inbox / name).write_bytes(whole[: len(whole) // 2])
    return whole, len(whole) // 2


async def test_a_truncated_file_is_held_with_a_growing_grace_then_fails(world: World) -> None:
    _write_half(world)
    job = world.add(world.inbox / "half.mp4")
    p = world.pipeline(hold_seconds=60, settle_seconds=2)
    start = world.clock.now()
    delays = []
    for _ in range(20):
        await world.step(p)
        j = world.job(job.id)
        if j.state == "failed":
            break
        assert (j.state, j.error, j.error_code) == ("queued", None, None)
        assert j.wait is not None and j.wait.startswith("held: ") and "truncated" in j.wait
        assert j.wait_until == j.next_attempt_at
        delays.append(j.next_attempt_at - world.clock.now())
        world.clock.advance(j.next_attempt_at - world.clock.now())
    j = world.job(job.id)
    assert (j.state, j.error_code) == ("failed", "probe_truncated")
    assert j.wait is None
    # The grace grows (2, 2, 4, 8, ...) and the hold lasts hold_seconds, not more.
    assert delays[0] == 2 and delays[-1] <= 60 and delays == sorted(delays[:-1]) + delays[-1:]
    assert len(delays) < 10
    assert 60 <= world.clock.now() - start <= 61
    assert (world.inbox / "_failed" / "half.mp4").is_file()
    assert world.snapshot()["projects"] == []


async def test_a_held_file_that_is_completed_goes_on_as_one_job(world: World) -> None:
    whole, half = _write_half(world)
    job = world.add(world.inbox / "half.mp4")
    p = world.pipeline(hold_seconds=60, settle_seconds=2)
    await world.step(p)
    assert (world.job(job.id).wait or "").startswith("held")
    with open(world.inbox / "half.mp4", "ab") as f:
        f.write(whole[half:])
    await world.run(p, lambda: world.job(job.id).state == "probed")
    j = world.job(job.id)
    assert (j.size, j.error, j.wait) == (len(whole), None, None)
    assert world.kinds(job.id).count("source_changed") == 1


async def test_a_source_changed_since_it_was_probed_is_not_moved(world: World) -> None:
    src = world.inbox / "bad.mp4"
    src.write_bytes(b"")
    job = world.add(src)
    p = world.pipeline(hold_seconds=0)
    real_probe = p.probe_fn

    async def probe_then_write(path, **kw):  # type: ignore[no-untyped-def]
        try:
            return await real_probe(path, **kw)
        finally:
            src.write_bytes(b"more bytes arrived while it was probed")

    p.probe_fn = probe_then_write
    await world.step(p)
    j = world.job(job.id)
    assert j.state == "queued" and (j.wait or "").startswith("settling")
    assert src.exists() and not (world.inbox / "_failed").exists()


async def test_a_failed_job_leaves_a_source_that_changed_in_place(world: World) -> None:
    from watchd.pipeline.outcomes import Fail

    job = world.drop("talk.mp4")
    p = world.pipeline()
    with open(world.inbox / "talk.mp4", "ab") as f:
        f.write(b"appended after it was taken")
    await p.handle_error(job, Fail("render_failed", "no clip could be rendered"))
    assert world.job(job.id).state == "failed"
    assert (world.inbox / "talk.mp4").exists()
    assert not (world.inbox / "_failed" / "talk.mp4").exists()
