"""Shared fixtures. Tests that need the real data sets look for them at $FACEGATE_DATA or
../shared/data (beside the checkout) and skip with a clear reason when absent.

Markers (pyproject.toml): `data` = needs that data; every test that uses the `data_dir` fixture,
directly or through another fixture (`lfw`, ...), gets it here, so `-m "not data"` runs what
stands on its own. `slow` = more than ~2 s (real models on many photos, training, subprocess
servers): `-m "not slow"` is the quick loop."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):     # the closure: fixtures of fixtures too
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "faces" / "lfw" / "images").is_dir():
        pytest.skip(f"real data not found at {d} (set FACEGATE_DATA)")
    return d


@pytest.fixture(scope="session")
def lfw(data_dir) -> Path:
    return data_dir / "faces" / "lfw"


@pytest.fixture(scope="session")
def aligner():
    from encoder.align import FaceAligner

    return FaceAligner()
