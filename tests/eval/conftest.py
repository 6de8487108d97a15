"""A headless Chromium (Debian's, driven by playwright) for the page tests; `make install` installs both."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One browser for the session (a fresh profile folder), closed at the end."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the [demo] extra is not installed")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no chromium on PATH: run `make install` (its install-browser step apt-installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def red_pixels(png_path, min_red: int = 180, max_other: int = 80) -> int:
    """How many pixels of a screenshot are clearly red (the colour predicted boxes are drawn in)."""
    from PIL import Image

    image = Image.open(png_path).convert("RGB")
    return sum(
        count
        for count, (r, g, b) in image.getcolors(2**24) or []
        if r >= min_red and g <= max_other and b <= max_other
    )
