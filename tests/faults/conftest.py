"""Fixtures of the fault tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def ray_tmp():
    """A short folder for Ray's session files (its socket paths must stay under 108 bytes), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
