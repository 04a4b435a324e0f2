"""The list of compression methods, their options, and :func:`make_method`, which builds one.

:data:`METHOD_OPTIONS` is the one table of methods: :data:`METHODS`, :data:`DERIVED` and
:data:`NO_SPARSITY` are read off it, and the study wing uses these names rather than a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ._base import NEEDS_SPARSITY, Method
from ._gmp import PruneConfig
from ._int8 import Int8Quantization
from ._lottery import LotteryTicket
from ._onnx_int8 import OnnxInt8Quantization
from ._oneshot import OneShotPruning
from ._random import RandomPruning
from ._structured import StructuredPruning

__all__ = [
    "METHOD_OPTIONS",
    "METHODS",
    "DERIVED",
    "NO_SPARSITY",
    "make_method",
    "UNKNOWN_METHOD",
    "OPTION_NOT_USED",
    "NEEDS_FROM",
]

#: The options each method takes, ``gmp`` (the default) first, spelled as on the command line
#: without ``--`` (and as in a study's ``[[population]]``). Any other option given is refused
#: (:data:`OPTION_NOT_USED`).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "gmp": ("sparsity", "scope", "prune-begin", "prune-end", "prune-every", "exclude", "prune-final"),
    "random": ("sparsity", "exclude", "prune-final"),
    "oneshot": ("sparsity", "scope", "exclude", "prune-final", "from", "finetune-epochs"),
    "lottery": ("sparsity", "scope", "exclude", "prune-final", "rewind", "rounds"),
    "structured": ("sparsity", "prune-begin", "prune-end", "prune-every", "exclude"),
    "int8": ("from", "calibration-images"),
    "onnx-int8": ("from", "calibration-images"),
}
#: Every method, ``gmp`` (the default) first.
METHODS = tuple(METHOD_OPTIONS)
#: The methods that derive each model from a trained dense parent (``--from``): a study trains
#: them after its baseline.
DERIVED = tuple(method for method, options in METHOD_OPTIONS.items() if "from" in options)
#: The methods that take no sparsity: a study's population of theirs needs no ``sparsity`` key.
NO_SPARSITY = tuple(method for method, options in METHOD_OPTIONS.items() if "sparsity" not in options)
_CLASSES: dict[str, type[Method]] = {
    cls.method: cls
    for cls in (PruneConfig, RandomPruning, OneShotPruning, LotteryTicket, StructuredPruning, Int8Quantization,
                OnnxInt8Quantization)
}
# Option name -> dataclass field, where they differ.
_FIELDS = {"prune-begin": "begin", "prune-end": "end", "prune-every": "frequency", "from": "source"}

UNKNOWN_METHOD = "unknown method {method!r}; choose one of {choices}"
OPTION_NOT_USED = "option {option!r} is not used by method {method!r}, which takes: {options}"
NEEDS_FROM = (
    "method {method!r} derives each model from a trained dense model: name the baseline "
    "population with --from"
)


def make_method(method: str, options: Mapping[str, Any]) -> Method:
    """The configuration of ``method`` from the options given, refusing one it does not use.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    options : mapping of str to value
        The options given, by their names in :data:`METHOD_OPTIONS` (``"prune-begin"``,
        ``"from"``); an option not given is absent (``None`` counts as absent).

    Returns
    -------
    Method
        A :class:`~pie_audit.training.methods.PruneConfig` for ``gmp``, else the method's own
        dataclass (:mod:`pie_audit.training.methods`).

    Raises
    ------
    ConfigError
        :data:`UNKNOWN_METHOD`, :data:`OPTION_NOT_USED`, :data:`NEEDS_FROM`, or a value out of
        range.
    """
    if method not in METHODS:
        raise ConfigError(UNKNOWN_METHOD.format(method=method, choices=", ".join(METHODS)))
    takes = METHOD_OPTIONS[method]
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in takes:
            raise ConfigError(
                OPTION_NOT_USED.format(option=option, method=method, options=", ".join(takes))
            )
    if method in DERIVED and "from" not in given:
        raise ConfigError(NEEDS_FROM.format(method=method))
    kwargs = {_FIELDS.get(k, k.replace("-", "_")): v for k, v in given.items()}
    if "exclude" in kwargs:
        kwargs["exclude"] = tuple(kwargs["exclude"])
    if "source" in kwargs:
        kwargs["source"] = str(kwargs["source"])
    if method != "gmp" and "sparsity" in takes and "sparsity" not in kwargs:
        raise ConfigError(NEEDS_SPARSITY.format(method=method, sparsity=None))
    return _CLASSES[method](**kwargs)
