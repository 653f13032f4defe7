"""The dashboard's view-models: errors and hints, filter links, the node column, the index the
queue's pages are read by."""

from __future__ import annotations

from dataclasses import dataclass

from tests.web.helpers import StaticSource, add_job
from watchd.ledger.db import JobRow, Ledger
from watchd.ledger.states import Stage
from watchd.web import views


def test_the_error_line_and_its_hint() -> None:
    ledger = Ledger(None)
    failed = add_job(
        ledger,
        "a.mp4",
        Stage.FAILED,
        error="Carmic refused the request: 415 — Convert it to MP4 and drop it again.\nmore",
    )
    parked = add_job(
        ledger, "b.mp4", Stage.PARKED, park_reason="billing: no minutes", error="old error"
    )
    assert views.split_error(ledger.require(failed)) == (
        "Carmic refused the request: 415",
        "Convert it to MP4 and drop it again.",
    )
    assert views.split_error(ledger.require(parked)) == ("billing: no minutes", "")
    assert views.split_error(ledger.require(add_job(ledger, "c.mp4"))) == ("", "")


def test_filter_links_keep_the_other_filters() -> None:
    f = views.parse_filters({"state": "failed", "rule": "", "q": "ep 1", "page": "2"})
    assert f == views.Filters("failed", "", "ep 1", 2)
    assert f.query(page=3) == "state=failed&q=ep+1&page=3&rule="
    assert views.parse_filters({"rule": views.ALL_RULES}).rule is None
    assert views.parse_filters({"state": "bogus", "page": "-4"}) == views.Filters(page=1)


@dataclass
class _Cluster(StaticSource):
    def node_of(self, job: JobRow) -> str:
        return "node-b"


def test_the_node_column_shows_only_with_a_cluster() -> None:
    ledger = Ledger(None)
    add_job(ledger, "a.mp4")
    alone = views.queue_view(ledger, StaticSource(ledger), views.Filters(), 0.0)
    cluster = views.queue_view(ledger, _Cluster(ledger), views.Filters(), 0.0)
    assert not alone.nodes and cluster.nodes and cluster.rows[0].node == "node-b"


def test_the_queue_is_read_newest_first_by_an_index() -> None:
    ledger = Ledger(None)
    plan = ledger.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 250"
    ).fetchall()
    assert any("jobs_created" in str(step) for step in plan), plan
    assert not any("TEMP B-TREE" in str(step) for step in plan), plan
