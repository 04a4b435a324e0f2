"""Training K models of a population at once on one device (``torch.func``).

The K models' parameters and buffers are stacked along a leading axis and called through
``vmap(functional_call)``. Each model keeps everything that makes it independent: its own
initialisation and data order (the same streams as :func:`pie_audit.training.train_model` draws
from its seed), its own masks (pruned per model along the stacked axis), its own BatchNorm running
statistics. Losses are summed over models, so each model's gradient is exactly its own, and
SGD's update is element-wise, so one optimizer over the stacked tensors updates each model as its
own optimizer would. Joint training therefore matches the one-at-a-time loop up to floating-point
rounding (vmap runs the K convolutions as one grouped convolution).

Why vmap rather than packing the models into grouped convolutions by hand: it works for any
architecture in the registry without rewriting it (BatchNorm, residual blocks, pooling), and
measured on CPU it was as fast as hand packing where either helped. See ``docs/joint-training.md``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from .data import Dataset
from .errors import ConfigError
from .packing import pack_input, pack_model, packable, unpack_output
from .pruning import apply_masks_, magnitude_masks, prunable_weights, sparsity_report
from .training import (
    PruneConfig,
    TrainConfig,
    TrainedModel,
    augment_batch,
    autocast,
    cosine_lr,
    derive_seeds,
    init_model,
    make_schedule,
)

__all__ = ["train_models_jointly", "default_jointly", "forward_flops", "CPU_JOINT_MAX_MFLOPS"]

#: On a CPU, joint training pays off only for models whose forward pass costs less than this per
#: image (MFLOP): bigger models are compute-bound and gain nothing from batching models
#: (bench/train_population.py; docs/joint-training.md).
CPU_JOINT_MAX_MFLOPS = 2.0
#: Most models trained at once: beyond this the gains flatten and memory grows linearly.
MAX_JOINTLY = 32


def forward_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> float:
    """Multiply-add FLOPs (x2) of one image's forward pass through conv and linear layers."""
    total = 0.0
    hooks = []

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kernel = m.weight[0].numel()  # in_channels/groups * kh * kw
        total += 2.0 * out[0].numel() * kernel

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += 2.0 * m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def default_jointly(
    arch: str, dataset: Dataset, device: torch.device, population: int
) -> int:
    """How many models to train at once when the user does not say (``--jointly``).

    The rule (docs/joint-training.md): on CUDA, up to :data:`MAX_JOINTLY` models (the trainer
    halves K if it runs out of memory); on CPU and MPS, :data:`MAX_JOINTLY` // 2 models only when
    one image's forward pass costs under :data:`CPU_JOINT_MAX_MFLOPS` MFLOP, else one at a time,
    because a compute-bound CPU gains nothing from batching models.
    """
    if device.type == "cuda":
        return max(1, min(population, MAX_JOINTLY))
    model = init_model(arch, dataset, 0)
    mflops = forward_flops(model, dataset.image_shape) / 1e6
    if mflops < CPU_JOINT_MAX_MFLOPS:
        return max(1, min(population, MAX_JOINTLY // 2))
    return 1


class _Forward:
    """``forward(params, buffers, x)`` of K stacked models on ``x`` of shape (K, B, C, H, W).

    Packed grouped convolutions when the architecture allows (:mod:`pie_audit.packing`), else
    ``vmap(functional_call)``. ``train()``/``eval()`` switch the underlying module's mode.
    """

    def __init__(self, arch: str, model: nn.Module, k: int):
        self.k = k
        self.packed = packable(arch, model)
        self.module = pack_model(model, k) if self.packed else copy.deepcopy(model).to("meta")
        self._vmapped = torch.vmap(self._call)

    def _call(self, p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, (p, b), (x,))

    def __call__(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return unpack_output(self._call(params, buffers, pack_input(x)), self.k)
        return self._vmapped(params, buffers, x)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


@torch.no_grad()
def _evaluate_jointly(
    forward: _Forward, params: dict, buffers: dict, x: torch.Tensor, *, batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Softmax probabilities of K models on the same inputs, shape (K, N, C), float32."""
    forward.train(False)
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        with autocast(device):
            logits = forward(params, buffers, chunk.expand(forward.k, *chunk.shape))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out, dim=1).numpy()


def train_models_jointly(
    dataset: Dataset,
    *,
    arch: str,
    seeds: Sequence[int],
    config: TrainConfig,
    prune: PruneConfig,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, dict, dict | None], None] | None = None,
) -> list[TrainedModel]:
    """Train one model per seed, all at once, and evaluate each on the test split.

    Parameters
    ----------
    dataset : Dataset
    arch : str
    seeds : sequence of int
        One model per seed; K = ``len(seeds)``.
    config, prune : TrainConfig, PruneConfig
        Shared by all K models, as in a population.
    device : torch.device or str
    on_epoch : callable(epoch, epochs), optional
    on_step : callable(step, params, masks), optional
        Called after each optimizer step with the stacked parameters (K leading) and masks.

    Returns
    -------
    list of TrainedModel
        In the order of ``seeds``; each as :func:`pie_audit.training.train_model` would return it
        up to floating-point rounding.
    """
    if len(seeds) < 1:
        raise ConfigError("train_models_jointly needs at least one seed")
    start_time = time.perf_counter()
    device = torch.device(device)
    if config.augment and not dataset.augment:
        config = replace(config, augment=False)
    k = len(seeds)

    models = [init_model(arch, dataset, s) for s in seeds]
    names = prunable_weights(models[0], exclude=prune.exclude, prune_final=prune.prune_final)
    params, buffers = stack_module_state(models)
    params = {n: p.detach().to(device).requires_grad_(True) for n, p in params.items()}
    buffers = {n: b.to(device) for n, b in buffers.items()}
    state_keys = list(models[0].state_dict())
    forward = _Forward(arch, models[0], k)
    del models

    generators = [torch.Generator().manual_seed(derive_seeds(s)[1]) for s in seeds]
    x_train = dataset.x_train.to(device)
    y_train = dataset.y_train.to(device)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    schedule = make_schedule(prune, total_steps)
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.SGD(
        list(params.values()),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )
    masks: dict[str, torch.Tensor] | None = None

    step = 0
    for epoch in range(config.epochs):
        forward.train()
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        for first in range(0, n, config.batch_size):
            idx = orders[:, first : first + config.batch_size]  # (K, B)
            xb, yb = x_train[idx], y_train[idx]  # (K, B, C, H, W), (K, B)
            if config.augment:
                xb = torch.stack([augment_batch(xb[i], g) for i, g in enumerate(generators)])
            if schedule.updates_at(step):
                masks = magnitude_masks(
                    {name: params[name] for name in names},
                    schedule.sparsity_at(step),
                    scope=schedule.scope,
                    previous=masks,
                    batch_dims=1,
                )
                apply_masks_(params, masks)
            lr = cosine_lr(
                step, total_steps=total_steps, base_lr=config.lr, warmup_steps=warmup_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device):
                logits = forward(params, buffers, xb)  # (K, B, classes)
            # Sum of the per-model mean losses: each model's gradient is its own.
            loss = nn.functional.cross_entropy(
                logits.float().flatten(0, 1), yb.flatten(), reduction="none"
            ).view(k, -1).mean(dim=1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if masks is not None:
                apply_masks_(params, masks)
            if on_step is not None:
                on_step(step, params, masks)
            step += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, config.epochs)

    probabilities = _evaluate_jointly(
        forward, params, buffers, dataset.x_test.to(device), batch_size=config.eval_batch_size,
        device=device,
    )
    labels = dataset.y_test.numpy()
    wall = time.perf_counter() - start_time
    results = []
    for i, seed in enumerate(seeds):
        state = {name: p[i].detach().cpu().clone() for name, p in params.items()}
        state |= {name: b[i].detach().cpu().clone() for name, b in buffers.items()}
        # Same key order as the module's own state_dict.
        state = {key: state[key] for key in state_keys}
        results.append(
            TrainedModel(
                seed=seed,
                state_dict=state,
                probabilities=probabilities[i],
                accuracy=float((probabilities[i].argmax(1) == labels).mean()),
                sparsity=sparsity_report(state, names) | {"target": prune.sparsity},
                schedule=schedule.to_dict() | {"total_steps": total_steps},
                steps=total_steps,
                wall_time_s=wall / k,
                device=str(device),
                extra={"config": asdict(config), "jointly": k},
            )
        )
    return results
