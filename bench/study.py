"""Benchmark of a whole study: `pie-audit study run` against `pie-audit train` run back to back.

On the digits study (``studies/digits.toml``: 16 models x 4 populations, 20 epochs) it times, as
whole processes from a fresh output directory each time:

- ``study_local_s``: ``pie-audit study run SPEC --no-report`` with the local executor
  (target: 60 s or less on 2 CPU cores once the environment exists);
- ``train_commands_s``: the four ``pie-audit train`` commands that train the same populations,
  one after another (``speedup`` = their time over the study's; target >= 1.3);
- ``study_ray_s``: the same study on a local Ray instance (``--executor ray``; its start is
  included) and ``ray_over_local`` (target <= 1.3), when Ray is installed.

Usage: ``python bench/study.py [--spec studies/digits.toml] [--json] [--no-ray]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pie_audit", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "digits.toml")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from pie_audit.study import read_study

    source = read_study(args.spec)
    result: dict = {"spec": str(args.spec), "models": source.models, "populations": len(source.populations)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The study, writing into a scratch copy of the spec's layout.
        spec = tmp / "study.toml"
        text = args.spec.read_text().replace(
            next(line for line in args.spec.read_text().splitlines() if line.startswith("out")), 'out = "runs/study"'
        )
        spec.write_text(text)
        result["study_local_s"] = _run(["study", "run", str(spec), "--no-report", "--quiet"], tmp)

        # The same populations, one `pie-audit train` each.
        train = source.train
        start = time.perf_counter()
        for population in source.populations:
            prune = population.prune
            _run(
                [
                    "train", "--dataset", source.dataset, "--arch", source.arch, "--population", str(source.models),
                    "--seed-start", str(source.seed_start), "--sparsity", str(prune.sparsity), "--scope", prune.scope,
                    "--prune-begin", str(prune.begin), "--prune-end", str(prune.end), "--epochs", str(train.epochs),
                    "--batch-size", str(train.batch_size), "--lr", str(train.lr), "--quiet",
                    "--out", str(tmp / "runs" / "train" / population.name),
                ],
                tmp,
            )  # fmt: skip
        result["train_commands_s"] = time.perf_counter() - start
        result["speedup"] = result["train_commands_s"] / result["study_local_s"]

        if not args.no_ray and importlib.util.find_spec("ray") is not None:
            shutil.rmtree(tmp / "runs" / "study")
            result["study_ray_s"] = _run(["study", "run", str(spec), "--no-report", "--quiet", "--executor", "ray"], tmp)
            result["ray_over_local"] = result["study_ray_s"] / result["study_local_s"]

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"study: {result['populations']} populations x {result['models']} models ({args.spec.name})")
    print(f"pie-audit study run (local)   {result['study_local_s']:7.1f} s   [target <= 60 s]")
    print(f"four pie-audit train commands {result['train_commands_s']:7.1f} s   "
          f"speed-up {result['speedup']:.2f}x [target >= 1.3]")  # fmt: skip
    if "study_ray_s" in result:
        print(f"pie-audit study run (ray)     {result['study_ray_s']:7.1f} s   "
              f"ray / local {result['ray_over_local']:.2f} [target <= 1.3]")  # fmt: skip


if __name__ == "__main__":
    main()
