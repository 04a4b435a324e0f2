"""Benchmark of population training: one model at a time against K models at once.

For each architecture it trains, with the real training loop (``train_models``, pruning to 90%
included) on synthetic data of the architecture's input size, one model alone (K=1) and K models
jointly for K in ``--k``, and prints training throughput:

- ``sequential_images_per_s``: images per second of one model trained alone (K=1);
- ``joint_images_per_s``: images per second summed over the K models trained jointly
  (``joint_images_per_model_per_s`` is that divided by K);
- ``speedup``: their ratio, i.e. how much faster a population trains;
- achieved FLOP/s (3 x forward FLOPs per training image) as a fraction of the device's dense
  matrix-multiply throughput, measured in the same run (fp32 on CPU, bf16 on CUDA, where training
  runs under bf16 autocast).

``--digits-population`` also times ``train_population`` on the real 16-model digits population
(20 epochs) with ``jointly=1`` against ``jointly=16``, the case ``pie-audit train --jointly``
targets on CPUs. ``--cpu-variants`` times what might speed up training one model on a CPU
(channels_last, bf16 autocast, larger batches, torch.compile), on a plain module stepped by hand.

Usage: ``python bench/train_population.py [--arch small-cnn-28 resnet18-cifar] [--k 4 16 32]
[--device auto] [--json] [--digits-population] [--cpu-variants]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from pie_audit.data import Dataset, load_dataset
from pie_audit.training._models import forward_flops
from pie_audit.training import (
    DEFAULT_TRAIN_CONFIGS,
    PruneConfig,
    TrainConfig,
    resolve_device,
    train_models,
    train_population,
)
from pie_audit.training._loop import init_model

# name -> (registry arch, input shape, CPU batch/steps, GPU batch/steps)
CASES = {
    "small-cnn-8": ("small-cnn", (1, 8, 8), (64, 40), (64, 200)),
    "small-cnn-28": ("small-cnn", (1, 28, 28), (128, 12), (128, 100)),
    "resnet18-cifar": ("resnet18-cifar", (3, 32, 32), (32, 2), (128, 30)),
}
# Masks recomputed every 10 steps, about as often as in a real run (~50 updates over thousands).
PRUNE = PruneConfig(sparsity=0.9, begin=0.0, end=0.8, frequency=10)


def synthetic(shape: tuple[int, int, int], n_train: int, n_test: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        name="synthetic",
        classes=tuple(str(i) for i in range(10)),
        x_train=torch.randn(n_train, *shape, generator=g),
        y_train=torch.randint(0, 10, (n_train,), generator=g),
        x_test=torch.randn(n_test, *shape, generator=g),
        y_test=torch.randint(0, 10, (n_test,), generator=g),
        split="synthetic",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, *, n: int = 2048, repeat: int = 10) -> tuple[float, str]:
    """Dense matmul FLOP/s: fp32 on CPU, bf16 on CUDA (the precision training uses there)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best, str(dtype).removeprefix("torch.")


def _time(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def bench_case(name: str, ks: list[int], device: torch.device, peak: float) -> list[dict]:
    arch, shape, cpu, gpu = CASES[name]
    batch, steps = gpu if device.type == "cuda" else cpu
    data = synthetic(shape, batch * steps)
    config = TrainConfig(epochs=1, batch_size=batch, lr=0.01, eval_batch_size=256)
    train_flops = 3 * forward_flops(init_model(arch, data, 0), shape)
    images = batch * steps

    # Warm-up: allocator, cuDNN autotuning, thread pools.
    warm = synthetic(shape, batch * 2)
    train_models(warm, arch=arch, seeds=[0], config=config, prune=PRUNE, device=device)
    train_models(warm, arch=arch, seeds=[0, 1], config=config, prune=PRUNE, device=device)

    seq_s = _time(lambda: train_models(data, arch=arch, seeds=[0], config=config, prune=PRUNE,
                                       device=device), device)  # fmt: skip
    seq_ips = images / seq_s
    rows = []
    for k in ks:
        try:
            joint_s = _time(lambda: train_models(
                data, arch=arch, seeds=list(range(k)), config=config, prune=PRUNE, device=device
            ), device)  # fmt: skip
        except torch.cuda.OutOfMemoryError:
            print(f"{name}: K={k} does not fit in device memory", file=sys.stderr)
            torch.cuda.empty_cache()
            continue
        joint_ips = k * images / joint_s
        rows.append(
            {
                "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
                "arch": name,
                "k": k,
                "batch_size": batch,
                "steps": steps,
                "sequential_images_per_s": seq_ips,
                "joint_images_per_s": joint_ips,
                "joint_images_per_model_per_s": joint_ips / k,
                "speedup": joint_ips / seq_ips,
                "train_gflop_per_image": train_flops / 1e9,
                "sequential_fraction_of_peak": seq_ips * train_flops / peak,
                "joint_fraction_of_peak": joint_ips * train_flops / peak,
            }
        )
    return rows


def bench_digits_population(device: torch.device) -> dict:
    """``train_population`` on the real 16-model digits population, 20 epochs, K=1 vs K=16."""
    data = load_dataset("digits")
    config = DEFAULT_TRAIN_CONFIGS["digits"]
    prune = PruneConfig(sparsity=0.9)
    times = {}
    for k in (1, 16):
        with tempfile.TemporaryDirectory() as tmp:
            times[k] = _time(lambda: train_population(
                data, arch="small-cnn", out=f"{tmp}/pop", population=16, train=config,
                prune=prune, device=str(device), jointly=k,
            ), device)  # fmt: skip
    return {"jointly_1_s": times[1], "jointly_16_s": times[16], "speedup": times[1] / times[16]}


def bench_cpu_variants(peak: float) -> list[dict]:
    """One model on 28x28 under what might speed up a CPU: a plain module's steps timed by hand."""
    arch, shape = "small-cnn", (1, 28, 28)
    flops = 3 * forward_flops(init_model(arch, synthetic(shape, 8), 0), shape)
    rows = []

    def run(label, batch, *, channels_last=False, bf16=False, compiled=False, steps=15):
        data = synthetic(shape, batch * steps)
        model = init_model(arch, data, 0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        fwd = torch.compile(model) if compiled else model
        x = data.x_train.to(memory_format=fmt)

        def step(i):
            xb, yb = x[i * batch : (i + 1) * batch], data.y_train[i * batch : (i + 1) * batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(fwd(xb).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for i in range(3):
            step(i)  # warm-up (and compilation)
        t = time.perf_counter()
        for i in range(steps):
            step(i)
        ips = batch * steps / (time.perf_counter() - t)
        rows.append({"variant": label, "batch_size": batch, "images_per_s": ips,
                     "fraction_of_peak": ips * flops / peak})  # fmt: skip

    run("plain fp32", 128)
    run("channels_last", 128, channels_last=True)
    run("bf16 autocast", 128, bf16=True)
    run("batch 512", 512)
    run("channels_last + batch 512", 512, channels_last=True)
    try:
        run("torch.compile", 128, compiled=True)
    except Exception as e:  # no compiler, unsupported backend: report, don't fail
        print(f"torch.compile unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["small-cnn-28", "resnet18-cifar"],
                        choices=list(CASES))  # fmt: skip
    parser.add_argument("--k", nargs="+", type=int, default=[4, 16, 32])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--digits-population", action="store_true")
    parser.add_argument("--cpu-variants", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    peak, dtype = matmul_peak(device)
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflop_per_s": peak / 1e9,
        "matmul_dtype": dtype,
        "cases": [],
    }
    for name in args.arch:
        result["cases"] += bench_case(name, args.k, device, peak)
    if args.digits_population:
        result["digits_population"] = bench_digits_population(device)
    if args.cpu_variants and device.type == "cpu":
        result["cpu_variants"] = bench_cpu_variants(peak)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"device {result['device']}, torch {result['torch']}, {result['threads']} threads; "
          f"dense matmul peak {peak / 1e9:.0f} GFLOP/s ({dtype})")  # fmt: skip
    print(f"{'arch':15} {'K':>3} {'seq img/s':>10} {'joint img/s':>12} {'per model':>10} "
          f"{'speedup':>8} {'seq %peak':>9} {'joint %peak':>11}")  # fmt: skip
    for r in result["cases"]:
        print(f"{r['arch']:15} {r['k']:>3} {r['sequential_images_per_s']:>10.0f} "
              f"{r['joint_images_per_s']:>12.0f} {r['joint_images_per_model_per_s']:>10.0f} "
              f"{r['speedup']:>7.2f}x {100 * r['sequential_fraction_of_peak']:>8.1f}% "
              f"{100 * r['joint_fraction_of_peak']:>10.1f}%")  # fmt: skip
    if "digits_population" in result:
        d = result["digits_population"]
        print(f"digits population (16 models, 20 epochs): jointly=1 {d['jointly_1_s']:.1f} s, "
              f"jointly=16 {d['jointly_16_s']:.1f} s, speedup {d['speedup']:.2f}x")  # fmt: skip
    for r in result.get("cpu_variants", []):
        print(f"cpu variant {r['variant']:28} batch {r['batch_size']:>4}: "
              f"{r['images_per_s']:>7.0f} img/s, {100 * r['fraction_of_peak']:.1f}% of peak")  # fmt: skip


if __name__ == "__main__":
    main()
