"""Shared fixtures. Tests that need ../shared/data fail when it is missing and
CI=true (a missing data set must not turn into a green run), and skip
otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "delf" / "data" / "samples"


def need_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"test data missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need_data()


@pytest.fixture(scope="session")
def small_conf():
    """A cheap pyramid for tests: two levels of a photo limited to 320 px."""
    from delf.conf import ExtractorConf

    return ExtractorConf(scales=(0.7071, 1.0), max_image_size=320, max_features=300)


@pytest.fixture(scope="session")
def small_extractor(small_conf):
    from delf.extractor import Extractor

    return Extractor(small_conf)


@pytest.fixture(scope="module")
def lund_server(tmp_path_factory, small_extractor):
    """The real `delf serve` over an index of the first nine bundled photos of Lund (cheap conf), with the
    token "t" and a copy of those photos as --db-images. Yields a namespace (url, token, db_images, photos,
    proc, log); stopped with SIGTERM at the end (exit status 0)."""
    import shutil
    import types

    from engine import Engine
    from engine.demo import sample_photos
    from evaluation.bench_serve import free_port, start_server, stop_server, wait_healthy

    photos = sample_photos()
    work = tmp_path_factory.mktemp("serve")
    idx, db = work / "lund.idx", work / "db"
    Engine.build(idx, photos[:-1], extractor=small_extractor).close()
    db.mkdir()
    for p in photos[:-1]:
        shutil.copy(p, db)
    port = free_port()
    log = work / "server.log"
    proc = start_server(idx, port, str(log), ["--token", "t", "--db-images", db])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, str(log), timeout=300)
        yield types.SimpleNamespace(url=url, token="t", db_images=db, photos=photos, proc=proc, log=log, index=idx)
    finally:
        status = stop_server(proc)
    assert status == 0, log.read_text()[-3000:]
