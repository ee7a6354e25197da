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
