"""Settings: validation on construction, and merging live changes from JSON or CLI strings."""

from __future__ import annotations

import pytest

from watchd.emulator.settings import (
    EmulatorSettings,
    Faults,
    Timings,
    Variants,
    merge,
    parse_assignment,
)


def test_merge_coerces_strings_and_json_values() -> None:
    t = merge(Timings(), {"step": "0.5", "complete_after": "none", "render": 2})
    assert (t.step, t.complete_after, t.render) == (0.5, None, 2.0)
    assert merge(t, {"complete_after": "30"}).complete_after == 30.0
    f = merge(Faults(), {"render_fail_first": "2", "fail_project": "FAILED_NO_SPEECH"})
    assert (f.render_fail_first, f.fail_project) == (2, "FAILED_NO_SPEECH")
    assert merge(f, {"fail_project": ""}).fail_project is None
    v = merge(Variants(), {"tier_limit_status": "402", "sse_ticket": "bare"})
    assert (v.tier_limit_status, v.sse_ticket) == (402, "bare")
    s = merge(EmulatorSettings(), {"strict_media": "off", "access_ttl": 5})
    assert (s.strict_media, s.access_ttl) == (False, 5)


@pytest.mark.parametrize(
    ("obj", "changes", "match"),
    [
        (Faults(), {"error_rate": 1.5}, "probability"),
        (Faults(), {"error_rate": True}, "number"),
        (Faults(), {"render_fail_first": 1.5}, "whole number"),
        (Faults(), {"fail_project": "FAILED_LATER"}, "fail_project"),
        (Faults(), {"commit_fail_mode": "explode"}, "commit_fail_mode"),
        (Timings(), {"keepalive": 0}, "keepalive"),
        (Timings(), {"stepp": 1}, "unknown"),
        (Variants(), {"tier_limit_status": 418}, "tier_limit_status"),
        (Variants(), {"tier_limit_at": "upload"}, "tier_limit_at"),
        (Variants(), {"export_done_status": " "}, "export_done_status"),
        (EmulatorSettings(), {"inspect": "maybe"}, "true or false"),
    ],
)
def test_bad_values_name_the_setting(obj: object, changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        merge(obj, changes)


def test_scaled_timings() -> None:
    t = Timings(step=2, render=4, export=6, clips_lag=1, complete_after=10, keepalive=15)
    fast = t.scaled(2)
    assert (fast.step, fast.render, fast.export, fast.clips_lag) == (1, 2, 3, 0.5)
    assert fast.complete_after == 5 and fast.keepalive == 15 and fast.ticket_ttl == 30
    with pytest.raises(ValueError):
        t.scaled(0)


def test_parse_assignment() -> None:
    assert parse_assignment(" error_rate = 0.5 ") == ("error_rate", "0.5")
    for bad in ("error_rate", "=1", ""):
        with pytest.raises(ValueError):
            parse_assignment(bad)
