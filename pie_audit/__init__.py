"""pie-audit: audit what pruning does to a neural network, class by class and example by example.

The public API is re-exported here; everything else is private to its module.
"""

from __future__ import annotations

from .errors import ConfigError, DatasetError, FormatError, OutputError, PieAuditError

__version__ = "0.1.0"

from .compare import CompareResult, compare  # noqa: E402  (compare.py reads __version__)
from .gate import GateRules  # noqa: E402

__all__ = [
    "__version__",
    "PieAuditError",
    "ConfigError",
    "DatasetError",
    "FormatError",
    "OutputError",
    "compare",
    "CompareResult",
    "GateRules",
]
