"""The endpoints answered minimally: templates, media library, social, stock media, members."""

from __future__ import annotations

import httpx

from tests.emulator.helpers import Api
from watchd.emulator import Emulator


def test_templates(api: Api) -> None:
    everything = api.get("/v1/templates/").json()["data"]
    vertical = api.get("/v1/templates/", params={"ratio": "9_16"}).json()["data"]
    assert (
        vertical and all(t["ratio"] == "9_16" for t in vertical) and len(everything) > len(vertical)
    )
    assert api.get("/v1/templates/", params={"ratio": "7_3"}).status_code == 400
    defaults = api.get("/v1/templates/defaults").json()["data"]
    assert set(defaults) == {"9_16", "1_1", "4_5", "16_9"}
    made = api.post("/v1/templates/", json={"name": "Brand", "ratio": "1_1", "template_config": {}})
    assert made.status_code == 201
    tid = made.json()["data"]["id"]
    bad = api.post(
        "/v1/templates/", json={"name": "X", "template_config": {"style": {"fontSize": 1}}}
    )
    assert bad.status_code == 422
    assert api.put("/v1/templates/defaults/1_1", json={"template_id": tid}).status_code == 200
    assert api.get("/v1/templates/defaults").json()["data"]["1_1"] == tid
    assert api.post(f"/v1/templates/{tid}/regenerate-previews").status_code == 200
    assert api.delete(f"/v1/templates/{vertical[0]['id']}").status_code == 403  # immutable
    assert api.delete(f"/v1/templates/{tid}").status_code == 200
    assert api.delete(f"/v1/templates/{tid}").status_code == 404
    assert api.delete("/v1/templates/defaults/1_1").status_code == 200
    api.emu.update(tier="FREE")
    assert api.put("/v1/templates/defaults/9_16", json={"template_id": "x"}).status_code == 402


def test_media_library(api: Api) -> None:
    presign = api.post(
        "/v1/media/presign", json={"filename": "logo.png", "content_type": "image/png"}
    )
    key = presign.json()["data"]["object_key"]
    assert api.post("/v1/media/confirm", json={"object_key": key}).status_code == 404
    assert (
        api.upload(presign.json()["data"]["upload_url"], b"\x89PNG....", "image/png").status_code
        == 200
    )
    confirmed = api.post("/v1/media/confirm", json={"object_key": key, "filename": "logo.png"})
    assert confirmed.status_code == 201 and confirmed.json()["data"]["media_type"] == "image"
    listing = api.get("/v1/media/", params={"media_type": "image"}).json()
    assert listing["meta"]["total"] == 1 and httpx.get(listing["data"][0]["url"]).status_code == 200
    stats = api.get("/v1/media/stats").json()["data"]
    assert stats["used_bytes"] == 8 and stats["cap_bytes"] == 50 * 1024**3
    mid = confirmed.json()["data"]["id"]
    assert api.delete(f"/v1/media/{mid}").status_code == 200
    assert api.delete(f"/v1/media/{mid}").status_code == 404


def test_social_accounts(api: Api) -> None:
    assert api.get("/v1/social/accounts").json()["data"] == []
    assert api.post("/v1/social/connect/myspace").status_code == 400
    connect = api.post("/v1/social/connect/youtube").json()["data"]
    assert connect["url"].startswith("https://")
    bad = api.post("/v1/social/callback/youtube", json={"code": "c", "state": "forged"})
    assert bad.status_code == 400
    account = api.post(
        "/v1/social/callback/youtube", json={"code": "c", "state": connect["state"]}
    ).json()["data"]
    toggled = api.request("PATCH", f"/v1/social/toggle/{account['id']}").json()["data"]
    assert toggled["enabled"] is False
    assert api.post(f"/v1/social/refresh/{account['id']}").status_code == 200
    assert api.delete(f"/v1/social/disconnect/{account['id']}").status_code == 200
    assert api.get("/v1/social/accounts").json()["data"] == []


def test_stock_media_is_public(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.api_url) as http:
        videos = http.get("/v1/stock-videos", params={"q": "city", "per_page": 2}).json()["data"]
        both = http.get("/v1/stock-search", params={"q": "city"}).json()["data"]
        pexels = http.get("/v1/stock-videos-pexels")
    assert len(videos["videos"]) == 2 and both["images"] and both["videos"]
    assert pexels.status_code == 401  # the passthrough is not public


def test_workspace_members(emu: Emulator, api: Api) -> None:
    other = emu.register_user("ed@example.com", "Editor-pass-1")
    ws = api.ws
    invited = api.post(f"/v1/{ws}/invite", ws=False, json={"email": "ed@example.com"})
    assert invited.status_code == 200 and invited.json()["data"]["member"] is True
    assert api.post(f"/v1/{ws}/invite", ws=False, json={"email": "nope"}).status_code == 400
    with Api(emu, "ed@example.com", "Editor-pass-1") as editor:
        editor.login()
        roles = {
            w["id"]: w["role"] for w in editor.get("/v1/me", ws=False).json()["data"]["workspaces"]
        }
        assert roles[ws] == "EDITOR"
        editor.ws = ws
        assert editor.get("/v1/projects").status_code == 200  # a member now
        assert (
            editor.post(f"/v1/{ws}/invite", ws=False, json={"email": "z@z.io"}).status_code == 403
        )
    path = f"/v1/{ws}/members/{other.user_id}"
    assert api.request("PATCH", path, ws=False, json={"role": "ADMIN"}).status_code == 400
    assert api.request("PATCH", path, ws=False, json={"role": "OWNER"}).status_code == 200
    assert api.delete(path, ws=False).status_code == 200
    me = f"/v1/{ws}/members/{emu.user_id}"
    assert api.delete(me, ws=False).status_code == 409  # the last owner stays
