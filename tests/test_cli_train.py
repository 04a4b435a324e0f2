"""`pie-audit train` from the command line: bad input gets one line, exit 2, nothing written."""

import json

import pytest

from pie_audit import data as data_module
from pie_audit.cli import main


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
        (["--epochs", "0"], ["epochs must be >= 1, got 0"]),
        (["--device", "tpu"], ["unknown device 'tpu'"]),
        (["--scope", "row"], ["unknown pruning scope 'row'"]),
        (["--prune-begin", "0.9", "--prune-end", "0.1"], ["begin <= end"]),
    ],
)
def test_bad_arguments(tmp_path, capsys, extra, fragments):
    out = tmp_path / "pop"
    code, _, err = run(["train", "--out", str(out), "--quiet", *extra], capsys)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert not out.exists()


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
