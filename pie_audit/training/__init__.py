"""Training: populations of dense and compressed models, one loop for one model or K at once.

Architectures, masks with a model axis and the Zhu & Gupta schedule, the compression methods,
int8 quantization, population directories (lock, resume, writing) and the units of work that
run locally or on Ray. Needs torch; never imports the audit.
"""

from __future__ import annotations

from ._loop import DEFAULT_TRAIN_CONFIGS, PruneConfig, TrainConfig, TrainedModel, resolve_device, train_models
from ._methods import DERIVED, METHODS, NO_SPARSITY, make_method
from ._models import ARCHITECTURES, UNKNOWN_ARCHITECTURE, build_model
from ._population import (
    check_arguments,
    default_jointly,
    open_population,
    population_spec,
    population_status,
    train_population,
)
from ._pruning import sparsity_report
from ._quantization import (
    int8_parameters,
    int8_weights,
    is_quantized_state_dict,
    load_quantized,
    quantized_engine,
)
from ._schedule import EXECUTORS, RAY_MISSING, plan_units, ray_available, run_local, run_ray

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_TRAIN_CONFIGS",
    "EXECUTORS",
    "DERIVED",
    "METHODS",
    "NO_SPARSITY",
    "RAY_MISSING",
    "UNKNOWN_ARCHITECTURE",
    "PruneConfig",
    "TrainConfig",
    "TrainedModel",
    "build_model",
    "check_arguments",
    "default_jointly",
    "int8_parameters",
    "int8_weights",
    "is_quantized_state_dict",
    "load_quantized",
    "make_method",
    "open_population",
    "plan_units",
    "population_spec",
    "population_status",
    "quantized_engine",
    "ray_available",
    "resolve_device",
    "run_local",
    "run_ray",
    "sparsity_report",
    "train_models",
    "train_population",
]
