"""Wake-ups between nodes (watchd/cluster/wakeup.py): a NOTIFY on the channel wakes a listening
node at once; a listener whose connection is cut listens again."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from tests.cluster.conftest import NodeFactory
from tests.cluster.test_ledger import add, sql, wait_for
from watchd.cluster.ledger import CHANNEL
from watchd.cluster.wakeup import Wakeups
from watchd.ledger.states import Stage

LISTENING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    f"AND query = 'LISTEN {CHANNEL}'"
)


@pytest.fixture
def woken(pg_url: str, make_node: NodeFactory) -> Iterator[tuple[Wakeups, threading.Event]]:
    """A node's listener, listening (a NOTIFY sent before its LISTEN would not reach it)."""
    make_node("suite-0")  # the schema, as a daemon's start makes it
    event = threading.Event()
    wakeups = Wakeups(pg_url, event.set)
    wakeups.start()
    try:
        wait_for(lambda: sql(pg_url, LISTENING) == [(1,)])
        yield wakeups, event
    finally:
        wakeups.stop()
    assert not wakeups._thread.is_alive()


def test_a_notify_on_the_channel_wakes_the_node(
    pg_url: str, woken: tuple[Wakeups, threading.Event]
) -> None:
    wakeups, event = woken
    sql(pg_url, "SELECT pg_notify('some_other_channel', 'x')")
    sql(pg_url, f"NOTIFY {CHANNEL}, 'released'")
    assert event.wait(5)
    assert wakeups.received == 1


def test_a_node_letting_jobs_go_or_freeing_a_slot_wakes_the_others(
    make_node: NodeFactory, woken: tuple[Wakeups, threading.Event]
) -> None:
    wakeups, event = woken
    a = make_node("suite-1")
    job, other, _ = add(a, "a.mov"), add(a, "b.mov"), add(a, "c.mov")
    for stage in (Stage.PROBED, Stage.CREATING, Stage.UPLOADING):
        a.transition(job.id, stage)  # taking a slot wakes nobody
    woken_by = []
    for let_go in (
        lambda: a.transition(job.id, Stage.FAILED),  # the slot is free
        lambda: a.release([other.id]),
        a.stop,  # lets c.mov go
    ):
        let_go()
        woken_by.append(event.wait(5))
        event.clear()
    assert woken_by == [True, True, True] and wakeups.received == 3


def test_a_listener_whose_connection_is_cut_listens_again(
    pg_url: str, woken: tuple[Wakeups, threading.Event]
) -> None:
    _, event = woken
    sql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = current_database() AND query = 'LISTEN {CHANNEL}'",
    )
    wait_for(lambda: sql(pg_url, LISTENING) == [(1,)], timeout=15)  # after a second's backoff
    sql(pg_url, f"NOTIFY {CHANNEL}, 'slot'")
    assert event.wait(5)


def test_the_slot_trigger_names_the_stages_that_hold_a_slot() -> None:
    from watchd.ledger.pg import PG_MIGRATIONS
    from watchd.ledger.states import HOLDS_PROCESSING_SLOT

    (trigger,) = [s for m in PG_MIGRATIONS for s in m if "TRIGGER jobs_slot_freed" in s]
    named = re.findall(r"OLD\.state IN \(([^)]*)\)", trigger)[0]
    assert {n.strip(" '") for n in named.split(",")} == {s.value for s in HOLDS_PROCESSING_SLOT}
