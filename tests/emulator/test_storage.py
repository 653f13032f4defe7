"""The storage origin: presigned PUT/GET as strict as S3, over real sockets."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api, raw_request, split_url
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Faults
from watchd.emulator.signing import Presigner, S3Error

BODY = b"\x00\x01video-bytes" * 500


def _slot(api: Api, **body: Any) -> dict[str, Any]:
    r = api.create(filesize=len(BODY), duration=10, **body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def _put_head(url: str, *headers: str) -> bytes:
    """A PUT request head for ``url`` with these header lines, as a client would send it."""
    host, target = split_url(url)
    lines = [f"PUT {target} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _project(emu: Emulator) -> dict[str, Any]:
    project: dict[str, Any] = emu.snapshot()["projects"][-1]
    return project


def test_put_stores_the_body_and_records_size_and_sha256(emu: Emulator, api: Api) -> None:
    slot = _slot(api)
    r = api.upload(slot["upload_url"], BODY)
    assert r.status_code == 200
    assert r.headers["ETag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    upload = _project(emu)["upload"]
    assert upload["size"] == len(BODY)
    assert upload["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert upload["stored"] is True
    put = [q for q in emu.snapshot()["requests"] if q["origin"] == "storage"][-1]
    assert put["content_length"] == len(BODY) and put["has_auth"] is False
    assert "X-Amz-Signature" in put["query_keys"] and "?" not in put["path"]


def test_chunked_put_is_refused(emu: Emulator, api: Api) -> None:
    slot = _slot(api)
    r = api.storage.put(
        slot["upload_url"],
        content=iter([BODY[:100], BODY[100:]]),
        headers={"Content-Type": "video/mp4"},
    )
    assert r.status_code == 411
    assert b"<Code>MissingContentLength</Code>" in r.content
    assert _project(emu)["upload"] is None


def test_put_with_authorization_is_refused(emu: Emulator, api: Api) -> None:
    slot = _slot(api)
    r = api.storage.put(
        slot["upload_url"],
        content=BODY,
        headers={"Content-Type": "video/mp4", "Authorization": f"Bearer {api.token}"},
    )
    assert r.status_code == 400 and b"InvalidArgument" in r.content
    assert _project(emu)["upload"] is None


@pytest.mark.parametrize("content_type", ["video/quicktime", "application/octet-stream", None])
def test_put_needs_the_declared_content_type(api: Api, content_type: str | None) -> None:
    slot = _slot(api)
    headers = {"Content-Type": content_type} if content_type else {}
    r = api.storage.put(slot["upload_url"], content=BODY, headers=headers)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content


def test_a_short_declared_type_takes_its_mime_type(api: Api) -> None:
    slot = _slot(api, content_type="mov")
    assert api.upload(slot["upload_url"], BODY, "video/quicktime").status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda u: u.replace("%2F", "/"),  # a client that decodes and re-encodes the query
        lambda u: u.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"),
        lambda u: u.replace("source.mp4", "source.MP4"),
        lambda u: u[:-1] + ("0" if u[-1] != "0" else "1"),
        lambda u: u.split("?")[0] + "?" + "&".join(sorted(u.split("?")[1].split("&"))),
    ],
)
def test_any_changed_byte_breaks_the_signature(emu: Emulator, api: Api, tamper: Any) -> None:
    slot = _slot(api)
    r = api.upload(tamper(slot["upload_url"]), BODY)
    assert r.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in r.content
    assert _project(emu)["upload"] is None


def test_an_unsigned_url_is_denied(api: Api) -> None:
    slot = _slot(api)
    r = api.upload(slot["upload_url"].split("?")[0], BODY)
    assert r.status_code == 403 and b"AccessDenied" in r.content


def test_an_expired_url_is_refused(make_emu: MakeEmu) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, upload_url_ttl=600, inspect=True)
    with Api(emu) as api:
        api.login()
        slot = _slot(api)
        clock.advance(601)
        r = api.upload(slot["upload_url"], BODY)
    assert r.status_code == 403
    assert b"<Message>Request has expired</Message>" in r.content


def test_put_without_content_length_is_411(api: Api) -> None:
    slot = _slot(api)
    head = _put_head(slot["upload_url"], "Content-Type: video/mp4", "Connection: close")
    response = raw_request(slot["upload_url"], head)
    assert response.startswith(b"HTTP/1.1 411")


def test_a_short_body_is_400(make_emu: MakeEmu) -> None:
    emu = make_emu(storage_idle_timeout=0.2, inspect=True)
    with Api(emu) as api:
        api.login()
        slot = _slot(api)
    head = _put_head(slot["upload_url"], "Content-Type: video/mp4", f"Content-Length: {len(BODY)}")
    response = raw_request(slot["upload_url"], head + BODY[:100])
    assert response.startswith(b"HTTP/1.1 400")
    assert b"IncompleteBody" in response
    assert _project(emu)["upload"] is None


def test_expect_100_continue(emu: Emulator, api: Api) -> None:
    slot = _slot(api)
    head = _put_head(
        slot["upload_url"],
        "Content-Type: video/mp4",
        f"Content-Length: {len(BODY)}",
        "Expect: 100-continue",
    )
    response = raw_request(slot["upload_url"], head, body=BODY, read_first=True)
    assert response.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    assert _project(emu)["upload"]["size"] == len(BODY)


def test_expect_100_continue_refuses_before_the_body(api: Api) -> None:
    slot = _slot(api)
    for content_type, length, status in (
        ("video/webm", len(BODY), b"403"),
        ("video/mp4", 5 * 1024**3 + 1, b"400"),
    ):
        head = _put_head(
            slot["upload_url"],
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            "Expect: 100-continue",
            "Connection: close",
        )
        response = raw_request(slot["upload_url"], head, read_first=True)
        assert response.startswith(b"HTTP/1.1 " + status), response[:200]
        assert b"100 Continue" not in response


def test_over_the_single_put_limit_is_refused(api: Api) -> None:
    slot = _slot(api)
    head = _put_head(
        slot["upload_url"],
        "Content-Type: video/mp4",
        f"Content-Length: {5 * 1024**3 + 1}",
        "Connection: close",
    )
    response = raw_request(slot["upload_url"], head)
    assert response.startswith(b"HTTP/1.1 400") and b"EntityTooLarge" in response


def test_upload_reset_fault_stores_nothing(make_emu: MakeEmu) -> None:
    emu = make_emu(faults=Faults(upload_reset_rate=1.0), inspect=True)
    big = BODY * 200  # several chunks: the reset comes mid-body
    with Api(emu) as api:
        api.login()
        slot = api.create(filesize=len(big), duration=10).json()["data"]
        with pytest.raises(httpx.TransportError):
            api.upload(slot["upload_url"], big)
    assert _project(emu)["upload"] is None
    assert emu.snapshot()["counters"]["upload_resets"] == 1


def test_hash_only_uploads(make_emu: MakeEmu) -> None:
    emu = make_emu(store_uploads=False, inspect=True)
    with Api(emu) as api:
        api.login()
        slot = _slot(api)
        assert api.upload(slot["upload_url"], BODY).status_code == 200
    upload = _project(emu)["upload"]
    assert upload["stored"] is False and upload["size"] == len(BODY)
    assert upload["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert not list(Path(emu.core.store.root, "objects").rglob("source.*"))


def test_get_serves_objects_with_ranges_and_is_strict(api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    url = api.clips(pid)[0]["source_video_url"]
    full = httpx.get(url)
    assert full.status_code == 200 and full.content == sample_video.read_bytes()
    assert full.headers["Content-Type"] == "video/mp4"
    part = httpx.get(url, headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == sample_video.read_bytes()[:10]
    with_auth = httpx.get(url, headers={"Authorization": f"Bearer {api.token}"})
    assert with_auth.status_code == 400
    assert httpx.head(url).status_code == 403  # signed for GET, not HEAD (as S3)
    assert httpx.put(url, content=b"x", headers={"Content-Type": "video/mp4"}).status_code == 403


def test_storage_upload_url_and_playback_url(api: Api) -> None:
    r = api.post(
        "/v1/storage/upload-url", json={"filename": "logo.png", "content_type": "image/png"}
    )
    assert r.status_code == 200
    data = r.json()["data"]
    assert api.upload(data["upload_url"], b"png-bytes", "image/png").status_code == 200
    r = api.post("/v1/storage/playback-url", json={"object_key": data["object_key"]})
    assert r.status_code == 200
    assert httpx.get(r.json()["data"]["url"]).content == b"png-bytes"
    other = api.post("/v1/storage/playback-url", json={"object_key": "workspaces/x/y"})
    assert other.status_code == 403


# ---- units ---------------------------------------------------------------------------------------


def test_presign_round_trip_and_expiry() -> None:
    signer = Presigner("bucket", access_key="AK", secret="s3cret")
    url = signer.presign("PUT", "http://127.0.0.1:9", "a/b c.mp4", ttl=60, now=1_800_000_000)
    target = url.split("127.0.0.1:9", 1)[1]
    assert "/bucket/a/b%20c.mp4?" in target
    assert "X-Amz-Credential=AK%2F20270115%2Fauto%2Fs3%2Faws4_request" in target
    signed = signer.verify("PUT", target, "127.0.0.1:9", now=1_800_000_060)
    assert (signed.bucket, signed.key) == ("bucket", "a/b c.mp4")
    with pytest.raises(S3Error, match="expired"):
        signer.verify("PUT", target, "127.0.0.1:9", now=1_800_000_061)
    for method, host in (("GET", "127.0.0.1:9"), ("PUT", "localhost:9")):
        with pytest.raises(S3Error) as ei:
            signer.verify(method, target, host, now=1_800_000_000)
        assert ei.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as ei:
        Presigner("bucket", access_key="AK", secret="other").verify(
            "PUT", target, "127.0.0.1:9", now=1_800_000_000
        )
    assert ei.value.status == 403
