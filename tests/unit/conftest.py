"""The unit tier builds no model: seconds in all. A test that needs the tiny model (or its processor) belongs in
tests/tiny; asking for the fixture here fails with that message."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir():
    raise pytest.UsageError("a unit test never builds a model: move this test to tests/tiny")


@pytest.fixture(scope="session")
def qwen7b_shaped_dir():
    raise pytest.UsageError("a unit test never builds a model: move this test to tests/tiny or tests/scale")
