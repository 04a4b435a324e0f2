"""`pie-audit train` from the command line: bad input gets one line, exit 2, nothing written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pie_audit.data import _datasets as data_module
from pie_audit.cli import INTERRUPTED, main
from pie_audit.interchange import incomplete_reason


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def assert_one_line_error(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pie-audit: error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0]


@pytest.mark.parametrize(
    "extra,fragments",
    [
        (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
        (["--arch", "vgg16"], ["unknown architecture 'vgg16'", "small-cnn"]),
        (["--sparsity", "1.0"], ["sparsity must be in [0, 1), got 1.0"]),
        (["--sparsity", "-0.1"], ["sparsity must be in [0, 1), got -0.1"]),
        (["--population", "0"], ["population must be >= 1, got 0"]),
        (["--jointly", "0"], ["jointly must be >= 1, got 0"]),
        (["--seed-start", "-1"], ["seed-start must be >= 0, got -1"]),
        (["--epochs", "0"], ["epochs must be a whole number >= 1, got 0"]),
        (["--device", "tpu"], ["unknown device 'tpu'"]),
        (["--scope", "row"], ["unknown pruning scope 'row'"]),
        (["--prune-begin", "0.9", "--prune-end", "0.1"], ["begin <= end"]),
        # Each of these used to get past the checks and write population.json first.
        (["--exclude", "["], ["--exclude '[' is not a valid regular expression"]),
        (["--sparsity", "0.5", "--exclude", ".*"], ["no layer of the model is left to prune"]),
        (["--lr", "inf"], ["learning rate must be a finite number > 0, got inf"]),
        (["--lr", "nan"], ["learning rate must be a finite number > 0, got nan"]),
        (["--weight-decay", "nan"], ["weight decay must be a finite number >= 0, got nan"]),
        (["--momentum", "nan"], ["momentum must be in [0, 1), got nan"]),
        (["--momentum", "1"], ["momentum must be in [0, 1), got 1.0"]),
        # 20 epochs of 22 steps: begin 1.0 and 0.995 both start pruning at step 440 of 440.
        (["--sparsity", "0.5", "--prune-begin", "1.0", "--prune-end", "1.0"],
         ["starts pruning at step 440 of a 440-step run", "prune-begin <= 0.9977"]),
        (["--sparsity", "0.5", "--prune-begin", "0.995", "--prune-end", "1.0", "--epochs", "1"],
         ["starts pruning at step 22 of a 22-step run", "prune-begin <= 0.9545"]),
    ],
)  # fmt: skip
def test_bad_arguments(tmp_path, capsys, extra, fragments):
    out = tmp_path / "pop"
    code, _, err = run(["train", "--out", str(out), "--quiet", *extra], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert list(tmp_path.iterdir()) == []  # neither the population nor its lock file


def test_a_diverged_run_stops_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "pop"
    code, _, err = run(
        ["train", "--out", str(out), "--quiet", "--lr", "1e6", "--epochs", "1", "--population", "2"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(
        err,
        "training diverged: the loss of seeds 0, 1 became non-finite at step 2 of 22",
        "choose a lower learning rate (--lr, now 1000000.0)",
    )
    assert not out.exists()  # so a re-run with a lower rate is not "a different configuration"
    code, _, err = run(["train", "--out", str(out), "--quiet", "--epochs", "1", "--population", "2"], capsys)
    assert code in (0, None), err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    code, _, err = run(
        ["train", "--out", str(blocker / "pop"), "--population", "1", "--epochs", "1", "--quiet"],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, str(blocker / "pop"), "cannot be created")
    assert blocker.read_text() == "not a directory"


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "pop"
    target.write_text("keep me")
    code, _, err = run(["train", "--out", str(target), "--epochs", "1", "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "exists and is not a directory")
    assert target.read_text() == "keep me"


def test_out_is_checked_before_the_data_is_read(tmp_path, capsys):
    target = tmp_path / "pop"
    target.write_text("keep me")
    code, _, err = run(
        ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "empty"), "--out", str(target)],
        capsys,
    )
    assert code == 2
    assert_one_line_error(err, "exists and is not a directory")  # not "cifar-10-batches-py not found"


def test_missing_dataset_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    out = tmp_path / "pop"
    for dataset, fragment in [("fashion-mnist", "IDX files not found"), ("cifar10", "not found")]:
        code, _, err = run(
            ["train", "--dataset", dataset, "--data-root", str(tmp_path / "empty"),
             "--out", str(out), "--quiet"],
            capsys,
        )  # fmt: skip
        assert code == 2
        assert_one_line_error(err, fragment, "--download")
    assert not out.exists()


def test_usage_error_exits_2(capsys):
    code, _, err = run(["train", "--population", "many"], capsys)
    assert code == 2
    assert "Traceback" not in err


def test_train_then_different_config_is_refused(tmp_path, capsys):
    out = tmp_path / "pop"
    code, _, err = run(
        ["train", "--out", str(out), "--population", "1", "--epochs", "1"], capsys
    )
    assert code in (0, None), err
    assert "1 models in" in err and "accuracy" in err
    spec = json.loads((out / "population.json").read_text())["spec"]
    assert spec["dataset"] == "digits" and spec["prune"]["sparsity"] == 0.0
    listing = sorted(p.name for p in out.iterdir())
    code, _, err = run(
        ["train", "--out", str(out), "--population", "2", "--epochs", "2", "--quiet"], capsys
    )
    assert code == 2
    assert_one_line_error(err, "holds runs of a different configuration", "train.epochs is 1 there, 2 now")
    assert sorted(p.name for p in out.iterdir()) == listing


@pytest.mark.slow
def test_ctrl_c_keeps_finished_models_and_a_rerun_resumes(tmp_path):
    """SIGINT a real `pie-audit train` once its first model is written: exit 130, the CLI's
    message, finished models kept whole, and a re-run trains only what is missing."""
    out = tmp_path / "pop"
    cmd = [sys.executable, "-m", "pie_audit", "train", "--out", str(out), "--quiet",
           "--device", "cpu", "--epochs", "2", "--jointly", "1"]  # fmt: skip
    proc = subprocess.Popen(
        [*cmd, "--population", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "seed-0000").is_dir():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first model never finished"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in err
    finished = sorted(p.name for p in out.iterdir() if p.name.startswith("seed-"))
    assert 1 <= len(finished) < 30, "the run was not interrupted"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written
    assert all(incomplete_reason(out / name, seed=int(name[5:])) is None for name in finished)
    first = (out / "seed-0000" / "run.json").stat().st_mtime_ns

    n = len(finished) + 1
    done = subprocess.run([*cmd, "--population", str(n)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("seed-")) == [
        f"seed-{s:04d}" for s in range(n)
    ]
    assert (out / "seed-0000" / "run.json").stat().st_mtime_ns == first  # kept, not retrained
    assert incomplete_reason(out / f"seed-{n - 1:04d}", seed=n - 1) is None


@pytest.mark.parametrize(
    "extra,fragments",
    [
        (["--method", "magic"], ["unknown method 'magic'; choose one of gmp, random, oneshot, lottery, structured, int8"]),
        (["--method", "int8", "--from", "runs/b", "--sparsity", "0.5"],
         ["option 'sparsity' is not used by method 'int8', which takes: from, calibration-images"]),
        (["--method", "int8"], ["method 'int8' derives each model from a trained dense model"]),
        (["--method", "int8", "--from", "runs/b", "--calibration-images", "0"],
         ["calibration-images must be a whole number >= 1, got 0"]),
        (["--method", "structured", "--sparsity", "0.5", "--scope", "global"],
         ["option 'scope' is not used by method 'structured'"]),
        (["--calibration-images", "8"], ["option 'calibration-images' is not used by method 'gmp'"]),
        (["--method", "random", "--sparsity", "0.9", "--prune-begin", "0.1"],
         ["option 'prune-begin' is not used by method 'random', which takes: sparsity, exclude, prune-final"]),
        (["--finetune-epochs", "2"], ["option 'finetune-epochs' is not used by method 'gmp'"]),
        (["--method", "oneshot", "--sparsity", "0.9"], ["method 'oneshot' derives each model from a trained dense model"]),
        (["--method", "random"], ["method 'random' needs a sparsity in (0, 1), got None"]),
    ],
)  # fmt: skip
def test_method_options_are_checked_before_anything_is_written(tmp_path, capsys, extra, fragments):
    code, _, err = run(["train", "--out", str(tmp_path / "pop"), "--quiet", *extra], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_from_a_population_that_is_not_there_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "pop"
    code, _, err = run(["train", "--out", str(out), "--quiet", "--method", "oneshot", "--sparsity", "0.9",
                        "--from", str(tmp_path / "nowhere")], capsys)  # fmt: skip
    assert code == 2
    assert_one_line_error(err, f"parent population {tmp_path / 'nowhere'}: not a pie-audit population")
    assert list(tmp_path.iterdir()) == []
