"""Shared pytest fixtures (kept small on purpose)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _compile_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """OpenVINO's compiled-model cache in a folder of the test session, not the user's."""
    import os

    os.environ["REGRISK_CACHE_DIR"] = str(tmp_path_factory.mktemp("regrisk-cache"))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's id: reproducible, different for every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
