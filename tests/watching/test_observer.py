"""InboxObserver on real folders, in both modes, with its fallbacks and restarts.

Nothing here sleeps to wait: each test waits on a queue with a timeout, and proves that an
ignored path was *not* reported by waiting for a later sentinel file (events of one watch
arrive in order).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from watchd.watching.observer import InboxObserver, polling_observer

# The suite turns warnings into errors; watchdog's benign inotify race (see observer.py)
# must not kill its reader thread here either. The daemon's own filter sits behind pytest's.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

TIMEOUT = 10.0
POLL = 0.05


@pytest.fixture(autouse=True)
def no_watchdog_threads_left() -> Iterator[None]:
    # The shared fixture only flags non-daemon threads; watchdog's are all daemons.
    before = set(threading.enumerate())
    yield
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"observer threads still running: {left}"


class Seen:
    """A thread-safe on_path that records what it is given."""

    def __init__(self) -> None:
        self.q: queue.Queue[Path] = queue.Queue()

    def __call__(self, path: Path) -> None:
        self.q.put(path)

    def wait_for(self, path: Path) -> list[Path]:
        """Everything reported up to and including ``path``."""
        got: list[Path] = []
        while True:
            try:
                p = self.q.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"{path} not reported; saw {got}") from None
            got.append(p)
            if p == path:
                return got


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def make(inbox: Path, seen: Seen) -> Iterator[Callable[..., InboxObserver]]:
    made: list[InboxObserver] = []

    def build(mode: str = "events", **kw: object) -> InboxObserver:
        kw.setdefault("fs_type", lambda p: "ext4")
        obs = InboxObserver(inbox, mode, seen, POLL, **kw)  # type: ignore[arg-type]
        made.append(obs)
        return obs

    yield build
    for obs in made:
        obs.stop()


def _write(path: Path, data: bytes = b"video") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_reports_candidates_and_ignores_the_rest(
    make: Callable[..., InboxObserver], inbox: Path, seen: Seen, mode: str
) -> None:
    obs = make(mode)
    assert obs.start()
    assert obs.effective_mode == mode and obs.alive()
    _write(inbox / "notes.txt")
    _write(inbox / ".hidden.mp4")
    _write(inbox / "_done" / "old.mp4")
    _write(inbox / "big.mp4.part")
    _write(inbox / "@eaDir" / "x.mp4")
    _write(inbox / "a.mp4")
    got = seen.wait_for(inbox / "a.mp4")
    assert set(got) == {inbox / "a.mp4"}
    obs.stop()
    assert not obs.alive()


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_rename_from_temporary_and_new_subfolders(
    make: Callable[..., InboxObserver], inbox: Path, seen: Seen, mode: str
) -> None:
    obs = make(mode)
    obs.start()
    # rsync style: written under a hidden temporary name, then renamed into place.
    tmp = inbox / "podcasts" / ".ep1.mp4.Xa81kQ"
    _write(tmp)
    tmp.rename(inbox / "podcasts" / "ep1.mp4")
    assert set(seen.wait_for(inbox / "podcasts" / "ep1.mp4")) == {inbox / "podcasts" / "ep1.mp4"}
    _write(inbox / "new" / "deeper" / "ep2.mkv")
    seen.wait_for(inbox / "new" / "deeper" / "ep2.mkv")


def test_folder_moved_in_reports_its_files(
    make: Callable[..., InboxObserver], inbox: Path, tmp_path: Path, seen: Seen
) -> None:
    obs = make("events")
    obs.start()
    season = tmp_path / "season1"
    _write(season / "e1.mp4")
    _write(season / "e2.mp4")
    season.rename(inbox / "season1")
    want = {inbox / "season1" / "e1.mp4", inbox / "season1" / "e2.mp4"}
    collected: set[Path] = set()
    while not want <= collected:
        collected.add(seen.q.get(timeout=TIMEOUT))


def test_network_filesystem_is_polled(
    make: Callable[..., InboxObserver], inbox: Path, seen: Seen, caplog: pytest.LogCaptureFixture
) -> None:
    obs = make("events", fs_type=lambda p: "cifs")
    with caplog.at_level(logging.WARNING, logger="watchd.watching.observer"):
        assert obs.start()
    assert obs.effective_mode == "poll"
    assert "is on cifs, a network filesystem" in obs.reason
    assert "polled every 0.05 s" in obs.reason
    assert obs.reason in caplog.text
    _write(inbox / "a.mp4")
    seen.wait_for(inbox / "a.mp4")


def test_retrying_a_missing_network_inbox_warns_once(
    make: Callable[..., InboxObserver], inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox.rmdir()
    obs = make("events", fs_type=lambda p: "nfs4")
    with caplog.at_level(logging.WARNING, logger="watchd.watching.observer"):
        for _ in range(5):
            assert not obs.restart()
    assert [r.getMessage() for r in caplog.records] == [obs.reason, obs.error]


def test_configured_poll_mode_says_so(make: Callable[..., InboxObserver]) -> None:
    obs = make("poll")
    assert obs.reason == 'scan = "poll" in the configuration'
    obs.start()
    assert obs.effective_mode == "poll"


class _FailingInotify:
    """Builds real inotify observers that fail the way the kernel's limits make them fail.

    ``init``: inotify_init() refused (EMFILE, too many instances); ``schedule`` / ``start``:
    inotify_add_watch() refused (ENOSPC, too many watches) when the watch is set up.
    """

    def __init__(self, err: int, where: str) -> None:
        self.err, self.where = err, where
        self.built: list[BaseObserver] = []

    def __call__(self) -> BaseObserver:
        if self.where == "init":
            raise OSError(self.err, os.strerror(self.err))
        obs = Observer()
        self.built.append(obs)

        def fail(*args: object, **kwargs: object) -> None:
            raise OSError(self.err, os.strerror(self.err))

        setattr(obs, self.where, fail)
        return obs


@pytest.mark.parametrize(
    ("err", "where", "sysctl"),
    [
        (errno.ENOSPC, "schedule", "fs.inotify.max_user_watches"),
        (errno.ENOSPC, "start", "fs.inotify.max_user_watches"),
        (errno.EMFILE, "init", "fs.inotify.max_user_instances"),
    ],
)
def test_inotify_limits_fall_back_to_polling(
    make: Callable[..., InboxObserver],
    inbox: Path,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
    err: int,
    where: str,
    sysctl: str,
) -> None:
    factory = _FailingInotify(err, where)
    obs = make("events", events_observer=factory)
    with caplog.at_level(logging.WARNING, logger="watchd.watching.observer"):
        assert obs.start()
    assert obs.effective_mode == "poll"
    assert sysctl in obs.reason and f"sysctl -w {sysctl}=" in obs.reason
    assert obs.reason in caplog.text
    # The half-built inotify observer and its reader thread were shut down.
    for built in factory.built:
        assert not built.is_alive()
        reader = getattr(built, "_inotify_fd", None)
        assert reader is None or not reader.is_alive()
    _write(inbox / "a.mp4")
    seen.wait_for(inbox / "a.mp4")


def test_missing_root_is_not_fatal_and_restart_recovers(
    make: Callable[..., InboxObserver], inbox: Path, seen: Seen, caplog: pytest.LogCaptureFixture
) -> None:
    inbox.rmdir()
    obs = make("events")
    with caplog.at_level(logging.WARNING, logger="watchd.watching.observer"):
        assert not obs.start()
        assert not obs.restart()
    assert obs.error == f"cannot watch {inbox}: No such file or directory"
    assert caplog.text.count("cannot watch") == 1  # retried every tick, said once
    assert not obs.alive()
    inbox.mkdir()
    assert obs.restart()
    assert obs.error is None and obs.alive()
    _write(inbox / "a.mp4")
    seen.wait_for(inbox / "a.mp4")


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_dead_observer_is_noticed_and_restarted(
    make: Callable[..., InboxObserver], inbox: Path, seen: Seen, mode: str
) -> None:
    built: list[BaseObserver] = []

    def events() -> BaseObserver:
        built.append(Observer())
        return built[-1]

    def poll(interval: float) -> BaseObserver:
        built.append(polling_observer(interval))
        return built[-1]

    obs = make(mode, events_observer=events, poll_observer=poll)
    obs.start()
    assert obs.alive()
    built[0].stop()  # the observer dies under us
    built[0].join(TIMEOUT)
    assert not obs.alive()
    assert obs.restart()
    assert obs.alive() and len(built) == 2
    _write(inbox / "after.mp4")
    seen.wait_for(inbox / "after.mp4")


def test_dead_emitter_counts_as_dead(make: Callable[..., InboxObserver]) -> None:
    built: list[BaseObserver] = []

    def poll(interval: float) -> BaseObserver:
        built.append(polling_observer(interval))
        return built[-1]

    obs = make("poll", poll_observer=poll)
    obs.start()
    [emitter] = list(built[0].emitters)
    emitter.stop()
    emitter.join(TIMEOUT)
    assert not obs.alive()


def test_dead_inotify_reader_counts_as_dead(make: Callable[..., InboxObserver]) -> None:
    # The reader thread dies when, say, a new folder hits the watch limit mid-run.
    built: list[BaseObserver] = []

    def events() -> BaseObserver:
        built.append(Observer())
        return built[-1]

    obs = make("events", events_observer=events)
    obs.start()
    reader = getattr(built[0], "_inotify_fd", None)
    if not isinstance(reader, threading.Thread):
        pytest.skip("this watchdog reads inotify on the emitter thread")
    reader.stop()  # type: ignore[attr-defined]
    reader.join(TIMEOUT)
    assert not obs.alive()
    assert obs.restart() and obs.alive()


def test_remounted_root_counts_as_dead(
    make: Callable[..., InboxObserver],
    inbox: Path,
    tmp_path: Path,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    obs = make("events")
    obs.start()
    inbox.rename(tmp_path / "old-mount")
    inbox.mkdir()  # same path, another directory: what a remount looks like
    with caplog.at_level(logging.WARNING, logger="watchd.watching.observer"):
        assert not obs.alive()
        assert not obs.alive()
    assert caplog.text.count("is a different directory now") == 1
    assert obs.restart() and obs.alive()
    _write(inbox / "a.mp4")
    seen.wait_for(inbox / "a.mp4")


def test_failing_callback_does_not_kill_the_dispatcher(
    make: Callable[..., InboxObserver], inbox: Path, caplog: pytest.LogCaptureFixture
) -> None:
    got: queue.Queue[Path] = queue.Queue()

    def on_path(p: Path) -> None:
        if p.name == "boom.mp4":
            raise RuntimeError("bug in the daemon's callback")
        got.put(p)

    obs = InboxObserver(inbox, "events", on_path, fs_type=lambda p: "ext4")
    try:
        obs.start()
        with caplog.at_level(logging.ERROR, logger="watchd.watching.observer"):
            _write(inbox / "boom.mp4")
            _write(inbox / "fine.mp4")
            assert got.get(timeout=TIMEOUT) == inbox / "fine.mp4"
        assert "on_path failed" in caplog.text
        assert obs.alive()
    finally:
        obs.stop()


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_symlinked_root(tmp_path: Path, inbox: Path, seen: Seen, mode: str) -> None:
    link = tmp_path / "link"
    link.symlink_to(inbox, target_is_directory=True)
    obs = InboxObserver(link, mode, seen, POLL, fs_type=lambda p: "ext4")  # type: ignore[arg-type]
    try:
        assert obs.start() and obs.alive()
        _write(inbox / "a.mp4")
        assert seen.wait_for(link / "a.mp4") == [link / "a.mp4"]
    finally:
        obs.stop()


def test_polling_never_follows_symlinked_folders(
    make: Callable[..., InboxObserver], inbox: Path, tmp_path: Path, seen: Seen
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (inbox / "loop").symlink_to(inbox, target_is_directory=True)
    (inbox / "out").symlink_to(outside, target_is_directory=True)
    obs = make("poll")
    obs.start()
    _write(outside / "secret.mp4")
    _write(inbox / "a.mp4")
    assert seen.wait_for(inbox / "a.mp4") == [inbox / "a.mp4"]


def test_start_is_idempotent_and_stop_too(make: Callable[..., InboxObserver]) -> None:
    obs = make("events")
    assert obs.start() and obs.start()
    obs.stop()
    obs.stop()
    assert not obs.alive()


def test_bad_arguments(inbox: Path, seen: Seen) -> None:
    with pytest.raises(ValueError):
        InboxObserver(inbox, "inotify", seen)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        InboxObserver(inbox, "poll", seen, 0)


def test_watchdog_stop_race_error_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    # watchdog's emitter may loop once more while being stopped and logs an error about it
    # (seen under load); it means nothing, so it does not reach the daemon's log.
    wd = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.WARNING):
        wd.error("InotifyEmitter.queue_events() called when the thread is inactive")
        wd.error("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
