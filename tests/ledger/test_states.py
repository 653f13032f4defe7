import itertools

import pytest

from watchd.ledger.states import (
    ALLOWED,
    RESUMABLE,
    TERMINAL,
    IllegalTransition,
    Stage,
    check_transition,
)


def test_every_stage_has_a_row() -> None:
    assert set(ALLOWED) == set(Stage)


def test_delivered_is_a_dead_end() -> None:
    assert ALLOWED[Stage.DELIVERED] == frozenset()


def test_every_non_terminal_stage_can_fail() -> None:
    for s in Stage:
        if s not in TERMINAL:
            assert Stage.FAILED in ALLOWED[s], s


def test_happy_path_is_allowed() -> None:
    path = [
        Stage.QUEUED,
        Stage.PROBED,
        Stage.CREATING,
        Stage.UPLOADING,
        Stage.UPLOADED,
        Stage.PROCESSING,
        Stage.CLIPS_READY,
        Stage.RENDERING,
        Stage.EXPORTING,
        Stage.DELIVERING,
        Stage.DELIVERED,
    ]
    for a, b in itertools.pairwise(path):
        check_transition("j", a, b)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (Stage.QUEUED, Stage.UPLOADING),
        (Stage.PROCESSING, Stage.CREATING),  # never create a second project after processing
        (Stage.RENDERING, Stage.CREATING),
        (Stage.DELIVERED, Stage.QUEUED),
        (Stage.DELIVERING, Stage.PARKED),
        (Stage.CLIPS_READY, Stage.PROBED),
    ],
)
def test_illegal_moves_raise(src: Stage, dst: Stage) -> None:
    with pytest.raises(IllegalTransition) as e:
        check_transition("j1", src, dst)
    assert "j1" in str(e.value)


def test_parked_and_failed_resume_anywhere_resumable() -> None:
    for s in RESUMABLE:
        check_transition("j", Stage.PARKED, s)
        check_transition("j", Stage.FAILED, s)


def test_values_are_readable_strings() -> None:
    assert Stage.CLIPS_READY.value == "clips_ready"
    assert str(Stage.PARKED) == "parked"
    assert Stage("uploading") is Stage.UPLOADING
