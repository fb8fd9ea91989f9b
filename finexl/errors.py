"""The errors a user can cause. The CLI reports these in one line (exit status 2); anything else is a bug.

Every class below derives from :class:`FinexlError` and also from the built-in exception a Python caller would
expect (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing path), so ``except ValueError`` keeps
working for library users.
"""

from __future__ import annotations


class FinexlError(Exception):
    """Base of every error caused by the user's input, files, settings or environment (not by a bug)."""


class ConfigError(FinexlError, ValueError):
    """A setting or argument with a value that cannot be used (out of range, unknown name, missing part)."""


class InputError(FinexlError, ValueError):
    """A file, folder or model whose content cannot be used (corrupt, wrong format, does not fit the base)."""


class MissingInputError(FinexlError, FileNotFoundError):
    """A path the user named does not exist or lacks a file it must hold."""


class OutputError(FinexlError, OSError):
    """A result could not be written (disk full, file too large, no permission, a file where a folder should be)."""


class NumericalError(FinexlError, FloatingPointError):
    """A model produced NaN or infinite values (bad weights, or a learning rate too high)."""


class BackendError(FinexlError, RuntimeError):
    """An optional backend (a chat model, an endpoint, an extra package) failed or is not installed."""
