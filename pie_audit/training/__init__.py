"""Training: populations of dense and compressed models, one loop for one model or K at once.

Architectures, masks with a model axis and the Zhu & Gupta schedule, the compression methods
(:mod:`pie_audit.training.methods`, one module each), int8 quantization, population directories
(lock, resume, writing) and the driver that trains units of work locally or on Ray and writes
their models. Needs torch; never imports the audit.
"""

from __future__ import annotations

from ._compact import compact_architecture, load_compact, recorded_channels
from ._cost import model_cost
from ._onnx_cost import onnx_cost
from ._device import resolve_device
from ._driver import EXECUTORS, Unit, UnitEvents, default_jointly, plan_units, run_local
from ._loop import DEFAULT_TRAIN_CONFIGS, TrainConfig, TrainedModel, train_models
from ._models import ARCHITECTURES, UNKNOWN_ARCHITECTURE, build_model
from ._population import (
    MAX_MODELS,
    check_population_size,
    model_dir_name,
    model_seeds,
    open_population,
    population_spec,
    population_status,
)
from ._pruning import sparsity_report
from ._quantization import (
    int8_parameters,
    int8_weights,
    is_quantized_state_dict,
    load_quantized,
    quantized_engine,
)
from ._ray import RAY_MISSING, ray_available, run_ray
from ._train import check_arguments, train_population
from .methods import DERIVED, METHODS, NO_SPARSITY, Method, PruneConfig, make_method

__all__ = [
    "ARCHITECTURES",
    "MAX_MODELS",
    "DEFAULT_TRAIN_CONFIGS",
    "DERIVED",
    "EXECUTORS",
    "METHODS",
    "NO_SPARSITY",
    "RAY_MISSING",
    "UNKNOWN_ARCHITECTURE",
    "Method",
    "PruneConfig",
    "TrainConfig",
    "TrainedModel",
    "Unit",
    "UnitEvents",
    "build_model",
    "check_arguments",
    "check_population_size",
    "compact_architecture",
    "default_jointly",
    "int8_parameters",
    "int8_weights",
    "is_quantized_state_dict",
    "load_compact",
    "load_quantized",
    "make_method",
    "model_cost",
    "onnx_cost",
    "model_dir_name",
    "model_seeds",
    "open_population",
    "plan_units",
    "population_spec",
    "population_status",
    "quantized_engine",
    "recorded_channels",
    "ray_available",
    "resolve_device",
    "run_local",
    "run_ray",
    "sparsity_report",
    "train_models",
    "train_population",
]
