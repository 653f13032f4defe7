"""Envelope decoding and the error readings, on plain httpx.Response objects."""

from __future__ import annotations

import email.utils
import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchd.carmic.envelope import (
    Envelope,
    decode,
    error_from_response,
    parse_retry_after,
    talks_about_concurrency,
)
from watchd.carmic.errors import (
    BadRequest,
    BillingRequired,
    CarmicError,
    ConcurrencyLimited,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    ServerError,
    Unprocessable,
    UnsupportedMediaType,
)

NOW = 1_800_000_000.0
E = "/v1/projects/create"


def _resp(status: int, **kw: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://x/api"), **kw)  # type: ignore[arg-type]


def _error(status: int, **kw: object) -> CarmicError:
    return error_from_response(_resp(status, **kw), endpoint=E, now=NOW)


def test_success_envelope_with_meta() -> None:
    env = decode(_resp(200, json={"data": [{"id": 1}], "meta": {"total": 1}}), endpoint=E, now=NOW)
    assert env == Envelope([{"id": 1}], {"total": 1})


def test_bare_success_body_is_the_payload() -> None:
    assert decode(_resp(200, json={"ticket": "t"}), endpoint=E, now=NOW) == Envelope(
        {"ticket": "t"}
    )


def test_empty_success_body() -> None:
    assert decode(_resp(204), endpoint=E, now=NOW) == Envelope(None)


def test_non_json_success_is_a_transient_server_error() -> None:
    r = _resp(
        200,
        text="<html><title>Captive portal</title></html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(ServerError, match=r"not JSON.*Captive portal"):
        decode(r, endpoint=E, now=NOW)


def test_error_envelope_served_with_200() -> None:
    with pytest.raises(Conflict, match="already processing"):
        decode(_resp(200, json={"error": "already processing", "code": 409}), endpoint=E, now=NOW)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (402, BillingRequired),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (415, UnsupportedMediaType),
        (422, Unprocessable),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (418, PermanentError),
    ],
)
def test_statuses_map_to_the_tree(status: int, cls: type[CarmicError]) -> None:
    e = _error(status, json={"error": "nope", "code": status})
    assert type(e) is cls
    assert e.status == status and e.message == "nope" and e.endpoint == E
    assert f"HTTP {status}: nope" in str(e)


@pytest.mark.parametrize("status", [402, 403, 409, 429])
@pytest.mark.parametrize(
    "message",
    [
        "Concurrent processing limit reached for your plan",
        "Your tier allows 1 concurrent video",
        "Too many concurrent projects",
        "Plan limit: maximum videos processing",
        "Maximum videos processing reached",
    ],
)
def test_concurrency_limits_whatever_the_status(status: int, message: str) -> None:
    e = _error(status, json={"error": message, "code": status}, headers={"Retry-After": "30"})
    assert isinstance(e, ConcurrencyLimited)
    assert e.status == status and e.retry_after == 30


def test_concurrency_words_under_other_statuses_are_not_concurrency_limits() -> None:
    assert isinstance(_error(400, json={"error": "concurrent edit"}), BadRequest)
    assert isinstance(_error(500, json={"error": "concurrency bug"}), ServerError)


def test_ordinary_billing_and_forbidden_stay_what_they_are() -> None:
    assert type(_error(402, json={"error": "Insufficient processing minutes"})) is BillingRequired
    assert type(_error(403, json={"error": "Not a member of this workspace"})) is Forbidden


def test_talks_about_concurrency() -> None:
    assert talks_about_concurrency("CONCURRENCY limit")
    assert not talks_about_concurrency("Insufficient processing minutes")


def test_html_502_page() -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title><style>body{}</style></head>"
        "<body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    )
    e = _error(502, text=page, headers={"Content-Type": "text/html"})
    assert isinstance(e, ServerError)
    assert e.message == "Bad Gateway: 502 Bad Gateway"


def test_plain_text_and_empty_error_bodies() -> None:
    assert _error(503, text="upstream connect error").message == (
        "Service Unavailable: upstream connect error"
    )
    assert _error(404).message == "Not Found"


def test_ninja_detail_errors() -> None:
    assert _error(401, json={"detail": "Unauthorized"}).message == "Unauthorized"
    e = _error(
        422,
        json={"detail": [{"loc": ["body", "payload", "filesize"], "msg": "field required"}]},
    )
    assert e.message == "body.payload.filesize: field required"


def test_error_messages_are_redacted() -> None:
    e = _error(
        400, json={"error": "bad url https://r2.example/b/k?X-Amz-Signature=abc&X-Amz-Date=1"}
    )
    assert "abc" not in e.message and "<redacted>" in e.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_rate_limited_reads_retry_after_header_or_body() -> None:
    e = _error(429, json={"error": "slow"}, headers={"Retry-After": "7"})
    assert isinstance(e, RateLimited) and e.retry_after == 7
    e = _error(429, json={"error": "slow", "retry_after": 12})
    assert e.retry_after == 12
    assert _error(429, json={"error": "slow"}).retry_after is None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["data", "meta", "error", "code", "detail", "message", "ticket", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=200, max_value=599),
    body=st.one_of(st.binary(max_size=200), _json_values.map(lambda v: json.dumps(v).encode())),
    retry_after=st.one_of(st.none(), st.text(max_size=30)),
)
def test_decode_only_ever_returns_an_envelope_or_raises_carmic_errors(
    status: int, body: bytes, retry_after: str | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    try:
        r = _resp(status, content=body, headers=headers)
    except ValueError:  # a header value httpx itself refuses: not a response we can get
        return
    try:
        env = decode(r, endpoint=E, now=NOW)
    except CarmicError as e:
        assert e.message and len(e.message) <= 400
        assert e.status is not None
    else:
        assert isinstance(env, Envelope) and 200 <= status < 300
