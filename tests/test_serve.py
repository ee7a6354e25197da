"""`delf serve` over HTTP: the real server (a subprocess) on an index of the bundled photos of Lund.

Search, match, add while searching, remove, the token, every kind of bad input
(each a 4xx JSON error naming the problem, the server still up), stats, the
OpenAPI description, and a clean stop on SIGTERM with no traceback logged.
"""

from __future__ import annotations

import io
import re
import signal
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few hundred bytes of PNG that claim width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def server(lund_server):
    lund_server.client = httpx.Client(base_url=lund_server.url, timeout=300)
    lund_server.lund_10 = open(lund_server.photos[-1], "rb").read()
    yield lund_server
    lund_server.client.close()


def search(server, data: bytes, name: str = "lund_10.jpg", **fields):
    return server.client.post("/search", files={"photo": (name, data, "image/jpeg")},
                              data={k: str(v) for k, v in fields.items()})


def auth(server, token: str | None = None) -> dict:
    return {"Authorization": f"Bearer {token or server.token}"}


def test_search_finds_the_held_out_photo_of_lund(server):
    r = search(server, server.lund_10, draw="true")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["query"] == "lund_10.jpg" and d["decision"] == "match" and d["confidence"] >= d["threshold"]
    best = d["results"][0]
    assert best["name"].startswith("lund_") and best["name"] != "lund_10.jpg" and best["inliers"] > 20
    assert len(d["results"]) == 5 and "predicted_label" not in d  # the server has no labels
    # Each result links to its image, served from --db-images.
    img = server.client.get(best["image_url"])
    assert img.status_code == 200 and img.content == (server.db_images / best["name"]).read_bytes()
    thumb = server.client.get(best["image_url"], params={"max_side": 64})
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 64
    # draw=true: the inliers of the best result, drawn.
    pic = server.client.get(d["picture_url"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    assert pic.content.startswith(PNG_SIGNATURE)


def test_search_options_top_and_threshold(server):
    d = search(server, server.lund_10, top=2, threshold=0.5).json()
    assert len(d["results"]) == 2 and d["threshold"] == 0.5
    assert d["decision"] == ("match" if d["confidence"] >= 0.5 else "no match")
    # The same options as query parameters.
    r = server.client.post("/search", params={"top": 1}, files={"photo": ("lund_10.jpg", server.lund_10)})
    assert len(r.json()["results"]) == 1
    r = search(server, server.lund_10, top=0)
    assert r.status_code == 422 and "top" in r.json()["error"]
    r = search(server, server.lund_10, labels="true")
    assert r.status_code == 400 and "--labels" in r.json()["error"]


def test_search_rejects_a_photo_of_another_place(server):
    import skimage.data

    r = search(server, jpeg(skimage.data.astronaut()), name="astronaut.jpg")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["decision"] == "no match" and d["confidence"] < d["threshold"]


def test_match_two_photos_and_their_picture(server):
    photos = server.photos
    files = {"photo1": ("lund_09.jpg", open(photos[8], "rb").read()), "photo2": ("lund_10.jpg", server.lund_10)}
    r = server.client.post("/match", files=files)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["inliers"] > 20 and 0 < d["unique_inliers"] <= d["inliers"] <= d["putative"]
    assert d["match"] and d["confidence"] >= d["threshold"] and np.asarray(d["model"]).shape == (3, 3)
    pic = server.client.get(d["picture_url"])
    assert pic.status_code == 200 and pic.headers["content-type"] == "image/png"
    assert pic.content.startswith(PNG_SIGNATURE) and Image.open(io.BytesIO(pic.content)).width > 600
    assert server.client.get("/match/0123456789abcdef.png").status_code == 404


def test_add_while_searching_then_remove(server):
    c = server.client
    assert "lund_10.jpg" not in c.get("/photos").json()["photos"]
    queries = [(p.split("/")[-1], open(p, "rb").read()) for p in server.photos[:4]]
    answers, problems = [], []

    def searcher(name, data):
        with httpx.Client(base_url=server.url, timeout=300) as own:
            for _ in range(2):
                r = own.post("/search", files={"photo": (name, data)})
                if r.status_code != 200:
                    problems.append(r.text)
                else:
                    answers.append(r.json())

    threads = [threading.Thread(target=searcher, args=q) for q in queries]
    for t in threads:
        t.start()
    added = c.post("/photos", files={"photo": ("lund_10.jpg", server.lund_10)}, headers=auth(server))
    for t in threads:
        t.join()
    assert added.status_code == 200, added.text
    assert added.json()["added"] == ["lund_10.jpg"] and added.json()["count"] == 10
    assert not problems and len(answers) == 8
    for d in answers:  # every answer complete: its own photo of Lund found first
        assert d["decision"] == "match" and d["results"][0]["name"] == d["query"]
    listed = c.get("/photos").json()
    assert listed["count"] == 10 and set(listed["photos"]) == {p.split("/")[-1] for p in server.photos}
    # The upload was saved under --db-images, so its image is served; a search now finds it.
    assert c.get("/photos/lund_10.jpg/image").content == server.lund_10
    assert search(server, server.lund_10).json()["results"][0]["name"] == "lund_10.jpg"
    again = c.post("/photos", files={"photo": ("lund_10.jpg", server.lund_10)}, headers=auth(server))
    assert again.status_code == 409 and "already in the index" in again.json()["error"]

    removed = c.delete("/photos/lund_10.jpg", headers=auth(server))
    assert removed.status_code == 200 and removed.json()["removed"] == ["lund_10.jpg"]
    assert removed.json()["count"] == 9 and removed.json()["generation"] == added.json()["generation"] + 1
    assert "lund_10.jpg" not in c.get("/photos").json()["photos"]
    assert search(server, server.lund_10).json()["results"][0]["name"] != "lund_10.jpg"
    assert c.get("/photos/lund_10.jpg/image").status_code == 404


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_labels_and_no_images_in_process(server, small_extractor, tmp_path):
    """create_app over an Engine with labels, without --db-images or a token (FastAPI's TestClient)."""
    from fastapi.testclient import TestClient

    from engine import Engine
    from engine.server import create_app

    labels = tmp_path / "labels.csv"
    labels.write_text("photo,place\n" + "".join(f"lund_{i:02d}.jpg,lund\n" for i in range(1, 10)))
    engine = Engine.open(server.index, labels=str(labels), extractor=small_extractor)
    with TestClient(create_app(engine)) as c:
        health = c.get("/health").json()
        assert health["labels"] and not health["images"] and not health["token_required"]
        d = c.post("/search", files={"photo": ("lund_10.jpg", server.lund_10)}).json()
        assert d["decision"] == "match" and d["predicted_label"] == "lund" and d["label_confidence"] == d["confidence"]
        assert d["results"][0]["label"] == "lund" and "image_url" not in d["results"][0]
        d = c.post("/search", data={"labels": "false"}, files={"photo": ("lund_10.jpg", server.lund_10)}).json()
        assert "predicted_label" not in d
        r = c.get("/photos/lund_01.jpg/image")
        assert r.status_code == 404 and "--db-images" in r.json()["error"]
    engine.close()


def test_writes_need_the_token(server):
    c = server.client
    files = {"photo": ("new.jpg", server.lund_10)}
    for headers in ({}, auth(server, "wrong"), {"Authorization": "Basic dDp0"}):
        r = c.post("/photos", files=files, headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"].lower(), r.text
        r = c.delete("/photos/lund_01.jpg", headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"].lower(), r.text
    assert c.get("/photos").json()["count"] == 9


def test_a_failed_add_leaves_nothing_behind(server):
    """A batch whose second photo would overwrite another file in --db-images is refused whole."""
    (server.db_images / "clash.jpg").write_bytes(b"someone else's file")
    files = [("photo", ("fresh.jpg", server.lund_10)), ("photo", ("clash.jpg", server.lund_10))]
    r = server.client.post("/photos", files=files, headers=auth(server))
    assert r.status_code == 409 and "clash.jpg" in r.json()["error"] and "--db-images" in r.json()["error"]
    assert not (server.db_images / "fresh.jpg").exists()
    assert (server.db_images / "clash.jpg").read_bytes() == b"someone else's file"
    assert "fresh.jpg" not in server.client.get("/photos").json()["photos"]
    (server.db_images / "clash.jpg").unlink()


BAD_UPLOADS = {
    "text": (b"just some words, not a photo\n", "notes.jpg", 400, "not an image"),
    "empty": (b"", "empty.jpg", 400, "empty upload"),
    "truncated": (None, "cut.jpg", 400, "truncated"),
    "bomb": (png_bomb(), "bomb.png", 400, "decompression bomb"),
    "tiny": (None, "tiny.png", 400, "too small"),
    "over the limit": (b"\xff" * (21 * 1024 * 1024), "huge.jpg", 413, "over the limit of 20 MB"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_are_4xx_json_errors_naming_the_problem(server, kind):
    data, name, status, words = BAD_UPLOADS[kind]
    if kind == "truncated":
        data = server.lund_10[: len(server.lund_10) // 2]
    elif kind == "tiny":
        buf = io.BytesIO()
        Image.new("RGB", (12, 12), (200, 30, 30)).save(buf, "PNG")
        data = buf.getvalue()
    for r in (search(server, data, name=name),
              server.client.post("/photos", files={"photo": (name, data)}, headers=auth(server)),
              server.client.post("/match", files={"photo1": (name, data), "photo2": ("lund_10.jpg", server.lund_10)})):
        assert r.status_code == status, r.text
        assert words in r.json()["error"], r.text
        if status == 400:
            assert name in r.json()["error"]
    assert server.client.get("/health").json()["status"] == "ok"


def test_bad_requests_are_4xx_json_errors_naming_the_problem(server):
    c = server.client
    cases = [
        (c.post("/search", data={"top": "3"}), 422, "missing field 'photo'"),
        (c.post("/match", files={"photo1": ("a.jpg", server.lund_10)}), 422, "missing field 'photo2'"),
        (c.post("/photos", files={"photo": ("../evil.jpg", server.lund_10)}, headers=auth(server)), 400, "../evil.jpg"),
        (c.post("/photos", files={"photo": ("notes.txt", server.lund_10)}, headers=auth(server)), 400, "must end in"),
        (c.delete("/photos/..%2Fdb%2Flund_01.jpg", headers=auth(server)), 400, "'..'"),
        (c.get("/photos/..%2F..%2Fetc%2Fpasswd/image"), 400, "'..'"),
        (c.delete("/photos/nowhere.jpg", headers=auth(server)), 404, "no photo named 'nowhere.jpg'"),
        (c.get("/photos/nowhere.jpg/image"), 404, "no photo named"),
        (c.get("/search"), 405, "GET is not allowed"),
        (c.get("/no/such/thing"), 404, "no such endpoint"),
        # A body that is not the multipart it claims to be: its photo is missing.
        (c.post("/search", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
         422, "missing field 'photo'"),
        (c.post("/search", content=b"photo=abc", headers={"content-type": "application/x-www-form-urlencoded"}),
         422, "photo"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (words, r.text)
        assert words in r.json()["error"], r.text
    assert not (server.db_images.parent / "evil.jpg").exists()
    assert c.get("/health").json()["status"] == "ok"


def test_health_stats_and_openapi(server):
    c = server.client
    health = c.get("/health").json()
    assert health["status"] == "ok" and health["images"] and health["token_required"] and not health["labels"]
    before = c.get("/stats").json()
    search(server, server.lund_10)
    stats = c.get("/stats").json()
    assert stats["queries_served"] == before["queries_served"] + 1
    assert stats["photos"] == health["photos"] and stats["generation"] == health["generation"]
    assert stats["descriptors"] == stats["photos"] * 300  # the cheap conf keeps 300 keypoints a photo
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] and stats["uptime_s"] > 0
    for key in ("matches_served", "photos_added", "photos_removed"):
        assert isinstance(stats[key], int)
    paths = c.get("/openapi.json").json()["paths"]
    for path, method in [("/search", "post"), ("/match", "post"), ("/match/{pid}.png", "get"), ("/photos", "get"),
                         ("/photos", "post"), ("/photos/{name}", "delete"), ("/photos/{name}/image", "get"),
                         ("/health", "get"), ("/stats", "get")]:
        assert method in paths[path], path
    assert c.get("/docs").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and "delf-engine" in page.text and 'id="search-file"' in page.text
    assert c.get("/static/app.js").status_code == 200 and c.get("/static/app.css").status_code == 200


def test_bench_serve_under_a_small_load(server):
    """`delf bench serve` starts its own server over a copy of the index, searches from several clients while
    adding a photo, and checks every answer; the index it was given is left as it was."""
    from evaluation.bench_serve import bench_serve, check_answer

    before = sorted(p.name for p in (server.index).rglob("*"))
    result = bench_serve(server.index, [str(p) for p in server.photos], clients=3, requests=9, log=lambda _: None)
    assert result["errors"] == 0, result["error_messages"]
    assert result["queries_per_second"] > 0 and result["in_process_queries_per_second"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["photos"] == 9 and result["added"].startswith("bench-added-")
    assert sorted(p.name for p in (server.index).rglob("*")) == before
    # What the bench counts as an error.
    assert check_answer(httpx.Response(200, json={"query": "a.jpg", "decision": "match", "confidence": 0.99,
                                                  "results": []}), "a.jpg") is None
    assert "HTTP 500" in check_answer(httpx.Response(500, text="oops"), "a.jpg")
    assert "wrong query" in check_answer(httpx.Response(200, json={"query": "b.jpg", "decision": "match"}), "a.jpg")


def test_sigterm_stops_the_server_cleanly(server):
    assert search(server, server.lund_10).status_code == 200
    assert search(server, b"", name="empty.jpg").status_code == 400
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    log = server.log.read_text()
    assert "delf serve: stopped (SIGTERM)" in log
    assert "Traceback" not in log  # after every bad input of this module
    # One line a request: method, path, status, milliseconds.
    assert re.search(r" POST /search 200 \d+\.\d ms\n", log) and re.search(r" POST /search 400 \d+\.\d ms\n", log)
