"""The one exception base for bad input: the CLI turns any of these into one line and exit 2."""

from __future__ import annotations


class LtsftError(Exception):
    """Bad input from the user (params, paths, files): reported as one line, no traceback."""


UserError = LtsftError  # the name most call sites use


class ConfigError(LtsftError):
    """A params.yaml value that is missing, of the wrong type or out of range; names the dotted key."""
