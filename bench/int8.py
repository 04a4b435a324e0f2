"""Benchmark of int8 inference against float on the CPU, for the architectures pie-audit trains.

For each architecture, one float model and its int8 version (``pie_audit.quantization``,
calibrated on 512 images) run the same test images in eval mode on the CPU, batch after batch,
with the same torch thread count; it prints the images per second of each, the int8/float
ratio, and the size of each model's state dict as ``torch.save`` writes it. small-cnn runs on
digits (a trained dense model, so the agreement of top-1 predictions is printed too);
resnet18-cifar on random 32x32 images (speed does not depend on what the weights learned).

Usage: ``python bench/int8.py [--repeat R] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import torch

from pie_audit.data import load_dataset
from pie_audit.training._quantization import predict_probabilities, quantize_static, quantized_engine
from pie_audit.training import PruneConfig, TrainConfig, build_model, train_models


def _images_per_second(model: torch.nn.Module, x: torch.Tensor, *, batch: int, repeat: int, int8: bool) -> float:
    """Best of ``repeat`` passes over ``x``, in images per second."""
    best = float("inf")
    with torch.no_grad(), (quantized_engine() if int8 else contextlib.nullcontext()):
        model(x[:batch])  # warm-up: packing, allocator
        for _ in range(repeat):
            start = time.perf_counter()
            for first in range(0, len(x), batch):
                model(x[first : first + batch])
            best = min(best, time.perf_counter() - start)
    return len(x) / best


def _saved_bytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def run(repeat: int) -> list[dict]:
    rows = []
    digits = load_dataset("digits")
    trained = train_models(digits, arch="small-cnn", seeds=[0], config=TrainConfig(epochs=20), prune=PruneConfig())[0]
    small = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    small.load_state_dict(trained.state_dict)
    x_small = digits.x_test.repeat(8, 1, 1, 1)  # 3,600 images
    generator = torch.Generator().manual_seed(0)
    resnet = build_model("resnet18-cifar", in_channels=3, image_size=32, num_classes=10)
    x_resnet = torch.randn(512, 3, 32, 32, generator=generator)
    cases = [
        ("small-cnn", small, digits.x_train[:512], x_small, 256),
        ("resnet18-cifar", resnet, torch.randn(512, 3, 32, 32, generator=generator), x_resnet, 64),
    ]
    for arch, model, calibration, x, batch in cases:
        model.eval()
        started = time.perf_counter()
        quantized = quantize_static(model, calibration)
        quantize_s = time.perf_counter() - started
        row = {
            "arch": arch,
            "images": len(x),
            "batch": batch,
            "threads": torch.get_num_threads(),
            "quantize_s": quantize_s,
            "float_images_per_s": _images_per_second(model, x, batch=batch, repeat=repeat, int8=False),
            "int8_images_per_s": _images_per_second(quantized, x, batch=batch, repeat=repeat, int8=True),
            "float_bytes": _saved_bytes(model.state_dict()),
            "int8_bytes": _saved_bytes(quantized.state_dict()),
        }
        row["speedup"] = row["int8_images_per_s"] / row["float_images_per_s"]
        row["size_ratio"] = row["int8_bytes"] / row["float_bytes"]
        if arch == "small-cnn":
            with torch.no_grad():
                float_top1 = model(digits.x_test).argmax(1)
            int8_top1 = torch.from_numpy(predict_probabilities(quantized, digits.x_test).argmax(1))
            row["top1_agreement"] = float((float_top1 == int8_top1).float().mean())
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = run(args.repeat)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        agreement = f", top-1 agreement {100 * r['top1_agreement']:.2f}%" if "top1_agreement" in r else ""
        print(
            f"{r['arch']}: float {r['float_images_per_s']:,.0f} images/s, int8 {r['int8_images_per_s']:,.0f} "
            f"images/s ({r['speedup']:.2f}x; {r['images']} images, batch {r['batch']}, {r['threads']} threads); "
            f"state dict {r['float_bytes'] / 1024:,.0f} KiB -> {r['int8_bytes'] / 1024:,.0f} KiB "
            f"({r['size_ratio']:.2f}x); quantizing {r['quantize_s']:.2f} s{agreement}"
        )


if __name__ == "__main__":
    main()
