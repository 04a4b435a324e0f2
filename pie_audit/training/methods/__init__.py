"""Compression methods: one module each, every one a frozen dataclass of its options.

A method (:class:`Method`) builds its run's mask policy and trains a group of seeds, through
the one training loop (:func:`pie_audit.training.train_models`) and its seams where it trains:

- ``gmp`` (:class:`PruneConfig`): gradual magnitude pruning from scratch (Zhu & Gupta 2017);
  sparsity 0 trains the dense baseline;
- ``random`` (:class:`RandomPruning`): random masks fixed before training, the control of
  Liu et al. 2019 and Gale et al. 2019;
- ``oneshot`` (:class:`OneShotPruning`): magnitude pruning of a trained dense parent, then
  fine-tuning with the mask held (Han et al. 2015), paired with the parent by seed;
- ``lottery`` (:class:`LotteryTicket`): iterative magnitude pruning with weight rewinding
  (Frankle & Carbin 2019; Frankle et al. 2019);
- ``structured`` (:class:`StructuredPruning`): gradual removal of whole conv filters by L2
  norm (Li et al. 2017; He et al. 2018);
- ``int8`` (:class:`Int8Quantization`): post-training static int8 quantization of a trained
  dense parent, calibrated on training images (Jacob et al. 2018), paired with the parent; it
  trains nothing and does not run the loop;
- ``onnx-int8`` (:class:`OnnxInt8Quantization`): the same, by another toolchain: the parent
  exported to ONNX and quantized statically by ONNX Runtime (QDQ, per-channel weights),
  evaluated by ONNX Runtime, paired with the parent.

:func:`make_method` builds one from the options a command line or a study spec gave, refusing
an option the method does not use. docs/methods.md describes each method and its defaults.
"""

from __future__ import annotations

from ._base import BAD_COUNT, BAD_SCOPE, NEEDS_SPARSITY, NOTHING_TO_PRUNE, FromScratch, Method
from ._gmp import PRUNING_TOO_LATE, PruneConfig
from ._int8 import CALIBRATION_IMAGES, Int8Quantization, calibration_indices
from ._onnx_int8 import NO_ONNX_RUNTIME, ONNX_GRAPH_KEY, OnnxInt8Quantization, onnx_graph_bytes
from ._lottery import BAD_REWIND, LotteryTicket
from ._oneshot import FINETUNE_FRACTION, FINETUNE_LR_FACTOR, OneShotPruning
from ._parent import (
    PARENT_DOES_NOT_FIT,
    PARENT_MISSING,
    PARENT_NOT_A_POPULATION,
    PARENT_NOT_DENSE,
    PARENT_OTHER,
    PARENT_UNREADABLE,
    FromParent,
    align_parent,
    check_parent,
    load_parent,
    recorded_run,
    recorded_spec,
)
from ._random import RandomPruning, mask_seed
from ._registry import (
    DERIVED,
    METHOD_OPTIONS,
    METHODS,
    NEEDS_FROM,
    NO_SPARSITY,
    OPTION_NOT_USED,
    UNKNOWN_METHOD,
    make_method,
)
from ._structured import NO_CONV, StructuredPruning

__all__ = [
    "METHODS",
    "DERIVED",
    "NO_SPARSITY",
    "METHOD_OPTIONS",
    "make_method",
    "Method",
    "FromScratch",
    "FromParent",
    "PruneConfig",
    "RandomPruning",
    "OneShotPruning",
    "LotteryTicket",
    "StructuredPruning",
    "Int8Quantization",
    "OnnxInt8Quantization",
    "onnx_graph_bytes",
    "ONNX_GRAPH_KEY",
    "mask_seed",
    "calibration_indices",
    "check_parent",
    "load_parent",
    "recorded_spec",
    "recorded_run",
    "align_parent",
    "CALIBRATION_IMAGES",
    "FINETUNE_FRACTION",
    "FINETUNE_LR_FACTOR",
    "UNKNOWN_METHOD",
    "OPTION_NOT_USED",
    "NEEDS_SPARSITY",
    "NEEDS_FROM",
    "NOTHING_TO_PRUNE",
    "PRUNING_TOO_LATE",
    "BAD_SCOPE",
    "BAD_REWIND",
    "BAD_COUNT",
    "NO_CONV",
    "NO_ONNX_RUNTIME",
    "PARENT_NOT_A_POPULATION",
    "PARENT_NOT_DENSE",
    "PARENT_OTHER",
    "PARENT_MISSING",
    "PARENT_UNREADABLE",
    "PARENT_DOES_NOT_FIT",
]
