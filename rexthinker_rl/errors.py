"""Errors shared by the data path (rows, images, data tools), defined once so every module can raise them."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset problem; the message names the file, row and key that are wrong."""
