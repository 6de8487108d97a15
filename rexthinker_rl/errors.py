"""Errors shared across modules, defined once so every module can raise them without importing the others."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and what would be right."""


class DataError(ValueError):
    """A dataset problem; the message names the file, row and key that are wrong."""
