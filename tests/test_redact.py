"""redact(): the substring pre-checks that skip its regexes never change its result."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from watchd import redact as R

PIECES = [
    "https://acct.r2.cloudflarestorage.com/k?X-Amz-Signature=abc&X-Amz-Date=1",
    "?<redacted>",
    "Bearer abc.def",
    "BEARER x",
    "eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJl",
    "password=hunter2",
    "PaSSword: 'x'",
    "pa\u017fsword=1",  # 'ſ' matches 's' case-insensitively
    "t\u0130cket=5",  # 'İ' matches 'i'
    "\u212aey",  # Kelvin sign
    "token:abc",
    "access=1",
    "refresh_token",
    "x-amz-signature=zz",
    "ticket",
    "hello world",
    "://",
    "?",
    "=",
    '"',
    " ",
]


def _unconditional(text: str) -> str:
    text = R._URL_QUERY.sub(r"\1?<redacted>", text)
    text = R._BEARER.sub(r"\1<redacted>", text)
    text = R._JWT.sub("<jwt>", text)
    return R._KV.sub(r"\1<redacted>", text)


@given(st.lists(st.sampled_from(PIECES), max_size=6), st.text(max_size=20))
def test_redact_equals_every_pattern_applied(pieces: list[str], noise: str) -> None:
    text = noise.join(pieces)
    assert R.redact(text) == _unconditional(text)


def test_plain_text_is_unchanged() -> None:
    line = "job j1 f0033.mp4: queued rule4/f0033.mp4 (rule 'rule4') as job j1"
    assert R.redact(line) == line


def test_each_kind_is_still_scrubbed() -> None:
    out = R.redact("GET https://h/k?sig=1 Bearer abc token=xyz eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0")
    assert "sig=1" not in out and "abc" not in out and "xyz" not in out and "eyJ" not in out
