"""One exception hierarchy for everything a user can get wrong.

The CLI turns any :class:`PieAuditError` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "PieAuditError",
    "ConfigError",
    "DatasetError",
    "FormatError",
    "OutputError",
]


class PieAuditError(Exception):
    """Base class of errors caused by the user's input, not by pie-audit."""


class ConfigError(PieAuditError, ValueError):
    """An impossible or unknown argument (dataset, architecture, sparsity, ...)."""


class DatasetError(PieAuditError):
    """Dataset files are missing or unreadable."""


class FormatError(PieAuditError):
    """A file does not follow pie-audit's interchange format."""


class OutputError(PieAuditError):
    """An output location cannot be written, or holds something it must not overwrite."""
