"""Training: one loop over a stack of K models (K = 1 included), read top to bottom.

The K models of a group share an architecture, a configuration and a step count, and nothing
else. Each model's randomness comes from its seed alone: one stream initialises the weights, an
independent one orders the data (and draws augmentations), so two models never share either and a
model trained twice with the same seed on CPU gives the same predictions. Each model also keeps
its own masks and its own BatchNorm statistics, and its own gradient: the loss is the sum of the
K models' mean losses, and SGD is element-wise, so one optimizer over the stacked tensors updates
each model as its own optimizer would. The stack runs packed (:mod:`._packing`); a model
trained in a group of K therefore matches the same model trained alone (K = 1) up to
floating-point rounding.

What a compression method (:mod:`.methods`) changes enters the loop through three seams, each
with a default, so a new method is a new small object rather than a flag in the loop:

- the *starting point* (:data:`StartingPoint`): how each model's initial weights are obtained.
  Default :func:`init_model`, fresh weights from the seed; one-shot pruning starts from the
  pruned parent, a lottery round from weights rewound to an early step.
- the *mask policy* (:class:`MaskPolicy`), built for the run by ``prune`` (:class:`Pruning`):
  given the step and the stacked prunable weights, the new masks or ``None``: gradual magnitude
  pruning's (dense when its sparsity is 0), random masks held, a parent's masks held, filters
  removed on a schedule (:mod:`._pruning`).
- the *post-training step* (:data:`PostTraining`): receives the finished models and returns what
  the run keeps. Default none; structured pruning adds each model's channel sparsity to its
  record there. Fine-tuning is not a post-training step but a second run of this loop (one-shot
  pruning), and int8 quantization does not run the loop at all: it quantizes a trained parent.

The loop checks what it produced before returning it: a loss or predictions that are not finite
stop the run (:data:`DIVERGED`, the seeds and the step named) instead of returning a model of
NaNs, and each model's zeros are counted again against its policy's target
(:data:`SPARSITY_MISSED`). :func:`check_training` refuses, before anything runs, what the loop
would refuse at its start.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import ConfigError
from ._models import build_model
from ._packing import pack, packable
from ._pruning import Tensors, apply_masks_, sparsity_report

__all__ = [
    "TrainConfig",
    "DEFAULT_TRAIN_CONFIGS",
    "TrainedModel",
    "MaskPolicy",
    "Pruning",
    "StartingPoint",
    "PostTraining",
    "EpochCallback",
    "StepCallback",
    "train_models",
    "check_training",
    "training_steps",
    "derive_seeds",
    "cosine_lr",
    "augment_batch",
    "autocast",
    "init_model",
    "NO_SEEDS",
    "NOT_PACKABLE",
    "NOT_A_COUNT",
    "BAD_LR",
    "BAD_MOMENTUM",
    "BAD_WEIGHT_DECAY",
    "BAD_WARMUP",
    "DIVERGED",
    "SPARSITY_MISSED",
]

NO_SEEDS = "training needs at least one seed"
NOT_PACKABLE = (
    "architecture {arch!r} cannot be trained: every model trains packed into grouped "
    "convolutions, and this model has a layer or a forward that packing does not support"
)
NOT_A_COUNT = "{name} must be a whole number >= 1, got {value!r}"
BAD_LR = "learning rate must be a finite number > 0, got {value!r}"
BAD_MOMENTUM = "momentum must be in [0, 1), got {value!r}"
BAD_WEIGHT_DECAY = "weight decay must be a finite number >= 0, got {value!r}"
BAD_WARMUP = "warm-up epochs must be a finite number >= 0, got {value!r}"
DIVERGED = (
    "training diverged: {what} of {seeds} became non-finite at step {step} of {total_steps}; "
    "choose a lower learning rate (--lr, now {lr!r})"
)
#: Raised as a RuntimeError: masks that miss their target are a bug in pie-audit, not bad input.
SPARSITY_MISSED = (
    "seed {seed}: {n_zero} of {n_weights} prunable weights are zero after training, but the mask "
    "policy's target {target} means {expected:.0f}, give or take one weight per layer "
    "({n_layers} layers); the masks were not applied as scheduled"
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (SGD with Nesterov momentum, cosine learning rate)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0  # linear warm-up; ResNets on CIFAR like one epoch
    augment: bool = False  # random 4-pixel-padded crops and horizontal flips
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ConfigError(NOT_A_COUNT.format(name=name.replace("_", "-"), value=value))
        # Written so that NaN fails too: every comparison with NaN is false. An infinite rate
        # would pass "> 0" and train a model of NaNs.
        if not (_finite(self.lr) and self.lr > 0):
            raise ConfigError(BAD_LR.format(value=self.lr))
        if not (_finite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(BAD_MOMENTUM.format(value=self.momentum))
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(BAD_WEIGHT_DECAY.format(value=self.weight_decay))
        if not (_finite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ConfigError(BAD_WARMUP.format(value=self.warmup_epochs))


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


#: Per-dataset defaults. Measured on 2 CPU cores: digits 98.1% dense and 97.4% at 90% sparsity
#: (16 models each, ~1 s a model jointly); Fashion-MNIST 92.4% at 90% sparsity (one model, 223 s).
#: CIFAR-10 follows the usual ResNet-18 recipe (warm-up, crops and flips); it needs a GPU and has
#: not been measured yet. CelebA (162,770 training images, one binary attribute) needs fewer
#: epochs than CIFAR-10: 10, with the same warm-up, crops and flips (a face flipped keeps its
#: attributes); not measured yet either.
DEFAULT_TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "digits": TrainConfig(epochs=20, batch_size=64, lr=0.05),
    "fashion-mnist": TrainConfig(epochs=15, batch_size=128, lr=0.05),
    "cifar10": TrainConfig(
        epochs=40, batch_size=128, lr=0.1, warmup_epochs=1.0, augment=True
    ),
    "celeba": TrainConfig(epochs=10, batch_size=128, lr=0.05, warmup_epochs=1.0, augment=True),
}


def training_steps(dataset: Dataset, config: TrainConfig) -> int:
    """Optimizer steps of a run: ``epochs * ceil(N_train / batch_size)``, the last batch partial."""
    return config.epochs * math.ceil(len(dataset.x_train) / config.batch_size)


def cosine_lr(step: int, *, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def derive_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for initialisation and for data order, derived from a model's seed."""
    init_seed, data_seed = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(init_seed) & (2**63 - 1), int(data_seed) & (2**63 - 1)


def init_model(arch: str, dataset: Dataset, seed: int) -> nn.Module:
    """Build ``arch`` for ``dataset`` with weights drawn from the model's own init stream."""
    init_seed, _ = derive_seeds(seed)
    channels, height, _width = dataset.image_shape
    # Initialise on CPU under a private RNG state so weights do not depend on the device or on
    # whatever else used the global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build_model(
            arch, in_channels=channels, image_size=height, num_classes=dataset.num_classes
        )


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel translations (zero padding) and horizontal flips, per image.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W)
    generator : torch.Generator
        CPU generator; the draws depend only on it, not on the device.
    """
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere.

    On CUDA the matmuls and convolutions run in bf16 on tensor cores; master weights, optimizer
    state and masks stay fp32. CPUs gain little from bf16 autocast in training, so they keep fp32.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class TrainedModel:
    """A finished model and everything the run directory records about it."""

    seed: int
    state_dict: dict[str, torch.Tensor]  # the plain module's keys, masks folded in; structured: compact shapes
    probabilities: np.ndarray  # (N_test, C) float32
    accuracy: float
    sparsity: dict
    schedule: dict
    steps: int
    wall_time_s: float  # the group's wall time over K
    device: str
    jointly: int  # K, the size of the group that trained it
    #: What a compression method adds to ``run.json`` (``parent``, fine-tuning, rounds, ...).
    record: dict = field(default_factory=dict)


class MaskPolicy(Protocol):
    """When and how the K models' masks change during training (the first seam).

    The loop calls it before every step with the stacked weights of :attr:`names`; the masks it
    returns are applied at once and after every optimizer step until it returns new ones.
    """

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters it masks."""

    @property
    def target(self) -> float:
        """The sparsity it ends at, recorded with each model."""

    def __call__(self, step: int, weights: Tensors, masks: Tensors | None) -> dict[str, torch.Tensor] | None:
        """New masks, bool of shape (K, ...) like ``weights``, or ``None`` to keep ``masks``."""

    def to_dict(self) -> dict:
        """What the run record states about it (``pruning.schedule`` in ``run.json``)."""


class Pruning(Protocol):
    """A compression method's configuration: builds the mask policy of one run."""

    def policy(self, model: nn.Module, total_steps: int) -> MaskPolicy:
        """The policy for a run of ``total_steps`` steps of ``model``'s architecture."""


#: The second seam: ``start(arch, dataset, seed)`` returns the model a seed starts from.
StartingPoint = Callable[[str, Dataset, int], nn.Module]
#: The third seam: ``finish(models)`` receives the K finished models, in seed order, and returns
#: them as the run keeps them (structured pruning adds its channel sparsity to each record); a
#: step that changed the weights would have to evaluate them again itself.
PostTraining = Callable[[list[TrainedModel]], list[TrainedModel]]
EpochCallback = Callable[[int, int], None]
StepCallback = Callable[[int, dict[str, torch.Tensor], "dict[str, torch.Tensor] | None"], None]


def train_models(
    dataset: Dataset,
    *,
    arch: str,
    seeds: Sequence[int],
    config: TrainConfig,
    prune: Pruning,
    device: torch.device | str = "cpu",
    start: StartingPoint = init_model,
    finish: PostTraining | None = None,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
) -> list[TrainedModel]:
    """Train one model per seed, all at once, and evaluate each on the test split.

    Parameters
    ----------
    dataset : Dataset
    arch : str
        Registry name of the architecture; it must be packable (:func:`._packing.packable`).
    seeds : sequence of int
        One model per seed; K = ``len(seeds)``, 1 included.
    config : TrainConfig
        Shared by the K models, as in a population.
    prune : Pruning
        Builds the mask policy, e.g. a :class:`.methods.PruneConfig` (``sparsity=0`` trains dense models).
    device : torch.device or str
    start : callable(arch, dataset, seed) -> nn.Module, default :func:`init_model`
        Where each model starts.
    finish : callable(list of TrainedModel) -> list of TrainedModel, optional
        Applied to the finished models before they are returned.
    on_epoch : callable(epoch, epochs), optional
        Called after each epoch (progress display).
    on_step : callable(step, state, masks), optional
        Called after each optimizer step with the stacked parameters and buffers (BatchNorm
        statistics), ``(K, ...)`` by name, live, and the current masks (``None`` before any);
        for logging, checking invariants and keeping a copy (lottery rewinding).

    Returns
    -------
    list of TrainedModel
        In the order of ``seeds``, each with ``jointly == len(seeds)``.

    Raises
    ------
    ConfigError
        No seeds, an architecture that cannot be packed, a pruning configuration the run cannot
        carry out (the method's ``policy``), or a loss or predictions that became non-finite
        (:data:`DIVERGED`): training stops at the end of that epoch and returns nothing.
    RuntimeError
        A model's sparsity misses its policy's target (:data:`SPARSITY_MISSED`): a bug.
    """
    if len(seeds) < 1:
        raise ConfigError(NO_SEEDS)
    start_time = time.perf_counter()
    device = torch.device(device)
    if config.augment and not dataset.augment:
        config = replace(config, augment=False)
    k = len(seeds)

    # Data: each model draws its order and augmentations from its own stream. The whole dataset
    # lives on the device, so a batch costs an index, not a copy from the host.
    generators = [torch.Generator().manual_seed(derive_seeds(seed)[1]) for seed in seeds]
    x_train = dataset.x_train.to(device)
    y_train = dataset.y_train.to(device)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = training_steps(dataset, config)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))

    # The K models as one module: stacked parameters (K, ...) under each model's own names.
    models = [start(arch, dataset, seed) for seed in seeds]
    policy = _policy(arch, models[0], prune, total_steps)
    model = pack(models).to(device)
    del models
    params = dict(model.named_parameters())
    state = params | dict(model.named_buffers())  # what on_step sees
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )
    masks: dict[str, torch.Tensor] | None = None
    # First step at which each model's loss was not finite (-1: none yet). Kept on the device and
    # read once an epoch, so that checking costs no synchronisation per step.
    diverged = torch.full((k,), -1, dtype=torch.long, device=device)

    step = 0
    for epoch in range(config.epochs):
        model.train()
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        for first in range(0, n, config.batch_size):
            idx = orders[:, first : first + config.batch_size]  # (K, B)
            xb, yb = x_train[idx], y_train[idx]  # (K, B, C, H, W), (K, B)
            if config.augment:
                xb = torch.stack([augment_batch(xb[i], g) for i, g in enumerate(generators)])
            new_masks = policy(step, {name: params[name] for name in policy.names}, masks)
            if new_masks is not None:
                masks = new_masks
                apply_masks_(params, masks)
            lr = cosine_lr(
                step, total_steps=total_steps, base_lr=config.lr, warmup_steps=warmup_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device):
                logits = model(xb)  # (K, B, classes)
            # The sum of the K models' mean losses, so each model's gradient is its own.
            losses = nn.functional.cross_entropy(
                logits.float().flatten(0, 1), yb.flatten(), reduction="none"
            ).view(k, -1).mean(1)  # (K,)
            loss = losses.sum()
            diverged = torch.where(
                ~torch.isfinite(losses.detach()) & (diverged < 0), step, diverged
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks is not None:
                # Momentum and weight decay would otherwise revive pruned weights.
                apply_masks_(params, masks)
            if on_step is not None:
                on_step(step, state, masks)
            step += 1
        _check_finite("the loss", diverged.cpu().numpy(), seeds, total_steps, config)
        if on_epoch is not None:
            on_epoch(epoch + 1, config.epochs)

    probabilities = _evaluate(
        model, dataset.x_test.to(device), k=k, batch_size=config.eval_batch_size
    )
    # A last step that overflowed leaves finite losses behind it and NaN weights.
    broken = ~np.isfinite(probabilities).reshape(k, -1).all(axis=1)
    _check_finite("the predictions", np.where(broken, total_steps, -1), seeds, total_steps, config)
    labels = dataset.y_test.numpy()
    stacked = model.state_dict()
    wall = time.perf_counter() - start_time
    results = []
    for i, seed in enumerate(seeds):
        state = {name: tensor[i].detach().cpu().clone() for name, tensor in stacked.items()}
        results.append(
            TrainedModel(
                seed=seed,
                state_dict=state,
                probabilities=probabilities[i],
                accuracy=float((probabilities[i].argmax(1) == labels).mean()),
                sparsity=sparsity_report(state, policy.names) | {"target": policy.target},
                schedule=policy.to_dict() | {"total_steps": total_steps},
                steps=total_steps,
                wall_time_s=wall / k,
                device=str(device),
                jointly=k,
            )
        )
    for result in results:
        _check_sparsity(result, policy)
    return finish(results) if finish is not None else results


def check_training(
    dataset: Dataset, *, arch: str, config: TrainConfig, prune: Pruning, seed: int = 0
) -> MaskPolicy:
    """Refuse, before anything is trained or written, a run :func:`train_models` would refuse.

    It builds one model (seed ``seed``) and the run's mask policy, which is where an
    architecture that cannot be packed, or a pruning schedule the run is too short for, shows.

    Returns
    -------
    MaskPolicy
        The policy the run would use.

    Raises
    ------
    ConfigError
        As :func:`train_models` would, before its first step.
    """
    model = init_model(arch, dataset, seed)
    return _policy(arch, model, prune, training_steps(dataset, config))


def _policy(arch: str, model: nn.Module, prune: Pruning, total_steps: int) -> MaskPolicy:
    if not packable(arch, model):
        raise ConfigError(NOT_PACKABLE.format(arch=arch))
    return prune.policy(model, total_steps)


def _check_finite(
    what: str, first_step: np.ndarray, seeds: Sequence[int], total_steps: int, config: TrainConfig
) -> None:
    """Raise :data:`DIVERGED` for the models whose ``first_step`` is not -1."""
    bad = [i for i, s in enumerate(first_step.tolist()) if s >= 0]
    if not bad:
        return
    names = ", ".join(str(seeds[i]) for i in bad)
    raise ConfigError(
        DIVERGED.format(
            what=what,
            seeds=f"seed {names}" if len(bad) == 1 else f"seeds {names}",
            step=min(int(first_step[i]) for i in bad),
            total_steps=total_steps,
            lr=config.lr,
        )
    )


def _check_sparsity(result: TrainedModel, policy: MaskPolicy) -> None:
    """The zeros of a finished model, counted again: they must match the policy's target."""
    report = sparsity_report(result.state_dict, policy.names)
    expected = policy.target * report["n_weights"]
    # Each layer (layer scope) or the whole (global scope) is rounded to a whole weight.
    if abs(report["n_zero"] - expected) > max(1, len(policy.names)):
        raise RuntimeError(
            SPARSITY_MISSED.format(
                seed=result.seed,
                n_zero=report["n_zero"],
                n_weights=report["n_weights"],
                target=policy.target,
                expected=expected,
                n_layers=len(policy.names),
            )
        )


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, *, k: int, batch_size: int) -> np.ndarray:
    """Softmax probabilities of the K packed models on the same inputs, shape (K, N, C), float32."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        with autocast(x.device):
            logits = model(chunk.expand(k, *chunk.shape))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out, dim=1).numpy()
