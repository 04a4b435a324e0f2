"""Command-line interface: parses arguments and calls the library, nothing more.

``pie-audit`` is :data:`app` (in :mod:`._app`, with the exit codes that :func:`main` owns); each
command lives in its own private module and registers itself on it when imported here.
"""

from __future__ import annotations

from ._app import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_GATE_FAILED,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    INTERNAL_ERROR,
    INTERRUPTED,
    SYSTEM_ERROR,
    TERMINATED,
    app,
    main,
)

# Commands register themselves on ``app`` when imported.
from . import _compare, _predict, _report, _review, _risk, _study, _train  # noqa: E402,F401

__all__ = [
    "DEBUG_ENV",
    "EXIT_BAD_INPUT",
    "EXIT_GATE_FAILED",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "INTERNAL_ERROR",
    "INTERRUPTED",
    "SYSTEM_ERROR",
    "TERMINATED",
    "app",
    "main",
]
