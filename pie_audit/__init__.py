"""pie-audit: audit what pruning does to a neural network, class by class and example by example.

The public API is re-exported here; everything else is private to its module.
"""

from __future__ import annotations

from ._version import __version__
from .compare import CompareResult, compare, power
from .errors import ConfigError, DatasetError, FormatError, OutputError, PieAuditError
from .gate import GateRules
from .outputs import pie_gallery, write_outputs
from .power import PowerSummary
from .predict import predict
from .settings import Settings
from .store import Population, load_population, write_population

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
    "Settings",
    "PowerSummary",
    "power",
    "Population",
    "load_population",
    "write_population",
    "predict",
    "pie_gallery",
    "write_outputs",
]
