"""Fixtures of tests/deploy: the images' stages and the Kubernetes manifests (deploy_files.py)."""
from __future__ import annotations

import pytest

from deploy_files import DOCKERFILES, Manifests, Stage, read_stages


@pytest.fixture(scope="session")
def images() -> dict[str, list[Stage]]:
    return {name: read_stages(path) for name, path in DOCKERFILES.items()}


@pytest.fixture(scope="session")
def manifests() -> Manifests:
    return Manifests()
