"""CelebA: torchvision's files read offline, a target attribute as the task, the others as groups.

The files are written here in torchvision's exact layout (``ROOT/celeba/img_align_celeba/*.jpg``,
``list_attr_celeba.txt`` with its two header lines and ``-1``/``1`` values,
``list_eval_partition.txt``), a few dozen 178x218 JPEGs, as the CIFAR-10 tests write its pickles.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import pie_audit
from pie_audit.cli import main
from pie_audit.data import load_dataset, resolve_target
from pie_audit.data import _datasets as data_module
from pie_audit.data._datasets import (
    CELEBA_ATTRIBUTES,
    CELEBA_IMAGE_SIZE,
    CELEBA_MISSING,
    NO_TARGET,
    UNKNOWN_TARGET,
)
from pie_audit.errors import ConfigError, DatasetError
from pie_audit.interchange import GROUPS_FILE, POPULATION_FILE, RUN_FILE, read_groups
from pie_audit.prediction import predict_files
from pie_audit.prediction._loading import TARGET_CONFLICT
from pie_audit.training import DEFAULT_TRAIN_CONFIGS, PruneConfig, TrainConfig, train_population

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VALID, N_TEST = 24, 6, 20
# CelebA's defaults (warm-up, crops and flips) for one epoch of three steps: a study's too.
TINY = replace(DEFAULT_TRAIN_CONFIGS["celeba"], epochs=1, batch_size=8)
ATTRIBUTE_CHOICES = ", ".join(CELEBA_ATTRIBUTES)


def write_celeba(root, *, n_train=N_TRAIN, n_valid=N_VALID, n_test=N_TEST, seed=0, shuffle_attributes=False):
    """Write CelebA as torchvision lays it out; returns the names, the -1/1 table and the partitions.

    Images are listed in name order, partitions 0, then 1, then 2, as in the real files. In the test
    split the first image has every attribute and the second none, so no attribute is constant
    there.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    n = n_train + n_valid + n_test
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    values = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    first_test = n_train + n_valid
    values[first_test], values[first_test + 1] = 1, -1
    for name, row in zip(names, values):
        # Blond hair is bright: the models have something to learn.
        shade = 200 if row[CELEBA_ATTRIBUTES.index("Blond_Hair")] == 1 else 60
        pixels = np.clip(rng.normal(shade, 30, (218, 178, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(base / "img_align_celeba" / name, quality=90)
    order = rng.permutation(n) if shuffle_attributes else np.arange(n)
    with open(base / "list_attr_celeba.txt", "w") as fh:
        fh.write(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n")
        for i in order:
            fh.write(names[i] + " " + " ".join(f"{v:2d}" for v in values[i]) + "\n")
    partitions = np.array([0] * n_train + [1] * n_valid + [2] * n_test)
    with open(base / "list_eval_partition.txt", "w") as fh:
        fh.writelines(f"{name} {p}\n" for name, p in zip(names, partitions))
    return names, values, partitions


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    names, values, partitions = write_celeba(root)
    return root, values, partitions


def column(values, partitions, name, partition):
    return values[partitions == partition, CELEBA_ATTRIBUTES.index(name)] == 1


# --- the loader ------------------------------------------------------------------------------------


def test_the_loader_reads_torchvision_files(celeba):
    root, values, partitions = celeba
    ds = load_dataset("celeba", data_root=root)
    size = CELEBA_IMAGE_SIZE
    assert ds.x_train.shape == (N_TRAIN, 3, size, size) and ds.x_test.shape == (N_TEST, 3, size, size)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert ds.name == "celeba" and ds.target == "Blond_Hair" and ds.augment
    assert ds.classes == ("not Blond_Hair", "Blond_Hair")
    np.testing.assert_array_equal(ds.y_train.numpy(), column(values, partitions, "Blond_Hair", 0))
    np.testing.assert_array_equal(ds.y_test.numpy(), column(values, partitions, "Blond_Hair", 2))
    np.testing.assert_array_equal(ds.example_ids, np.arange(N_TEST))  # the validation images are not read
    # Standardised with the training split's statistics.
    assert abs(float(ds.x_train.mean())) < 1e-4
    assert "partition 0 (24 images)" in ds.split and "partition 2 (20)" in ds.split


def test_the_test_splits_other_attributes_travel_with_it(celeba):
    root, values, partitions = celeba
    attributes = load_dataset("celeba", data_root=root).attributes
    others = [a for a in CELEBA_ATTRIBUTES if a != "Blond_Hair"]
    assert list(attributes.columns) == ["example_id", *others]
    assert attributes["example_id"].dtype == np.int64 and len(attributes) == N_TEST
    np.testing.assert_array_equal(attributes["example_id"], np.arange(N_TEST))
    for name in others:
        assert attributes[name].dtype == bool
        np.testing.assert_array_equal(attributes[name], column(values, partitions, name, 2))


def test_another_target(celeba):
    root, values, partitions = celeba
    ds = load_dataset("celeba", data_root=root, target="Male")
    assert ds.target == "Male" and ds.classes == ("not Male", "Male")
    np.testing.assert_array_equal(ds.y_test.numpy(), column(values, partitions, "Male", 2))
    assert "Male" not in ds.attributes.columns and "Blond_Hair" in ds.attributes.columns
    assert ds.test_hash != load_dataset("celeba", data_root=root).test_hash  # the labels differ


def test_attributes_are_matched_by_file_name_not_line(tmp_path, celeba):
    write_celeba(tmp_path, shuffle_attributes=True)
    shuffled, ordered = load_dataset("celeba", data_root=tmp_path), load_dataset("celeba", data_root=celeba[0])
    assert shuffled.test_hash == ordered.test_hash and shuffled.train_hash == ordered.train_hash
    pd.testing.assert_frame_equal(shuffled.attributes, ordered.attributes)


def test_the_centre_square_is_what_the_models_see(tmp_path):
    # 178x218 like CelebA's aligned faces: the 20 rows above and below the centre square are white.
    pixels = np.zeros((218, 178, 3), dtype=np.uint8)
    pixels[:20], pixels[-20:] = 255, 255
    pixels[20:198, :89, 0] = 255  # left half of the square red
    path = tmp_path / "face.png"
    Image.fromarray(pixels).save(path)
    image = data_module._celeba_image(path, 64)
    assert image.shape == (3, 64, 64) and image.dtype == np.uint8
    assert image[1:].max() == 0  # no white leaks in from outside the square
    assert image[0, :, :31].min() == 255 and image[0, :, 33:].max() == 0


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"]
)
def test_a_missing_file_is_named(tmp_path, missing):
    write_celeba(tmp_path, n_train=2, n_valid=0, n_test=2)
    target = tmp_path / "celeba" / missing
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset("celeba", data_root=tmp_path)
    assert str(e.value) == CELEBA_MISSING.format(
        path=target, images="img_align_celeba", attributes="list_attr_celeba.txt",
        partitions="list_eval_partition.txt", base=tmp_path / "celeba",
    )  # fmt: skip


def test_a_listed_image_that_is_missing_or_unreadable_is_named(tmp_path):
    write_celeba(tmp_path, n_train=2, n_valid=0, n_test=2)
    images = tmp_path / "celeba" / "img_align_celeba"
    (images / "000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"000003\.jpg not found \(list_eval_partition\.txt lists it\)"):
        load_dataset("celeba", data_root=tmp_path)
    (images / "000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"000003\.jpg is not a readable image"):
        load_dataset("celeba", data_root=tmp_path)


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("list_attr_celeba.txt", lambda lines: ["x\n", *lines[1:]], "line 1: expected the number of images"),
        ("list_attr_celeba.txt", lambda lines: ["5\n", *lines[1:]], "line 1 says 5 images, but the file lists 4"),
        ("list_attr_celeba.txt", lambda lines: [*lines[:3], lines[3].replace("-1", " 0", 1).replace(" 1", " 0", 1), *lines[4:]],
         "line 4: 000002.jpg: 5_o_Clock_Shadow is 0, expected -1 or 1"),
        ("list_attr_celeba.txt", lambda lines: [*lines[:3], lines[3].rsplit(" ", 1)[0] + "\n", *lines[4:]],
         "line 4: 000002.jpg: no value for Young, expected -1 or 1"),
        ("list_attr_celeba.txt", lambda lines: [*lines[:5], lines[2]], "000001.jpg is listed twice (lines 3 and 6)"),
        ("list_attr_celeba.txt", lambda lines: [lines[0].replace("4", "3"), *lines[1:5]], "no attributes for 000004.jpg, which list_eval_partition.txt puts in partition 2"),
        ("list_eval_partition.txt", lambda lines: [lines[0].replace(" 0", " 7"), *lines[1:]], "line 1: 000001.jpg: partition is 7, expected 0, 1 or 2"),
        ("list_eval_partition.txt", lambda lines: [line.replace(" 2", " 1") for line in lines], "partition 2 (test) lists no image"),
    ],
)
def test_malformed_lists_are_refused_naming_the_file_and_line(tmp_path, file, edit, message):
    write_celeba(tmp_path, n_train=2, n_valid=0, n_test=2)
    path = tmp_path / "celeba" / file
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))
    with pytest.raises(DatasetError) as e:
        load_dataset("celeba", data_root=tmp_path)
    text = str(e.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


def test_an_unknown_target_lists_the_attributes(celeba):
    expected = UNKNOWN_TARGET.format(target="Blond", dataset="celeba", choices=ATTRIBUTE_CHOICES)
    with pytest.raises(ConfigError) as e:
        resolve_target("celeba", "Blond")
    assert str(e.value) == expected
    with pytest.raises(ConfigError) as e:
        load_dataset("celeba", data_root=celeba[0], target="Blond")
    assert str(e.value) == expected
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", target="Male")
    assert str(e.value) == NO_TARGET.format(dataset="digits", choices="celeba")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--target", "Blond"], "unknown target 'Blond' for celeba; choose one of its attributes: 5_o_Clock_Shadow"),
        (["--data-root", "{empty}"], "celeba: {empty}/celeba/img_align_celeba not found; pie-audit never downloads CelebA"),
    ],
)
def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path, celeba, capsys, extra, fragment):
    out = tmp_path / "pop"
    empty = tmp_path / "empty"
    extra = [e.format(empty=empty) for e in extra]
    args = ["train", "--dataset", "celeba", "--data-root", celeba[0], "--out", out, "--quiet", *extra]
    code, err = run_cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment.format(empty=empty) in lines[0], err
    assert not out.exists()
    code, err = run_cli(["train", "--dataset", "digits", "--target", "Male", "--out", out], capsys)
    assert code == 2 and "digits has fixed classes and takes no target" in err and not out.exists()


# --- populations with groups -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def populations(celeba, tmp_path_factory):
    """A dense and a 50%-pruned population of 2 tiny models each, trained on the files above."""
    root = celeba[0]
    runs = tmp_path_factory.mktemp("runs")
    data = load_dataset("celeba", data_root=root)
    for name, sparsity in (("dense", 0.0), ("gmp-50", 0.5)):
        train_population(
            data, arch="small-cnn", out=runs / name, population=2, train=TINY,
            prune=PruneConfig(sparsity=sparsity), device="cpu", jointly=2,
        )  # fmt: skip
    return runs / "dense", runs / "gmp-50"


def test_a_population_writes_its_groups(celeba, populations):
    _, values, partitions = celeba
    dense, _ = populations
    groups = pd.read_parquet(dense / GROUPS_FILE)
    others = [a for a in CELEBA_ATTRIBUTES if a != "Blond_Hair"]
    assert list(groups.columns) == ["example_id", *others] and len(groups) == N_TEST
    np.testing.assert_array_equal(groups["example_id"], np.arange(N_TEST))
    for name in others:
        np.testing.assert_array_equal(groups[name], column(values, partitions, name, 2))
    # The interchange reads it against the population's examples.
    table = read_groups(dense / GROUPS_FILE, np.arange(N_TEST), group_by=["Male", "Young"])
    assert table.names == ("Male", "Young") and table.ignored_rows == 0


def test_the_target_is_recorded_and_binds_the_directory(celeba, populations, capsys):
    dense, _ = populations
    spec = json.loads((dense / POPULATION_FILE).read_text())["spec"]
    assert (spec["dataset"], spec["target"]) == ("celeba", "Blond_Hair")
    run = json.loads((dense / "seed-0000" / RUN_FILE).read_text())
    assert run["dataset"]["target"] == "Blond_Hair" and run["classes"] == ["not Blond_Hair", "Blond_Hair"]
    # Resuming with another target is refused, naming the target rather than the hash it changes.
    args = ["train", "--dataset", "celeba", "--target", "Male", "--data-root", celeba[0], "--out", dense,
            "--population", 2, "--epochs", 1, "--batch-size", 8, "--sparsity", 0, "--device", "cpu", "--quiet"]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2 and "different configuration (target is 'Blond_Hair' there, 'Male' now)" in err, err


def test_compare_picks_up_the_baselines_groups(populations):
    dense, pruned = populations
    result = pie_audit.compare(dense, pruned)
    assert result.groups is not None and result.group_source == dense / GROUPS_FILE
    assert len(result.group_attributes) == len(CELEBA_ATTRIBUTES) - 1
    chosen = pie_audit.compare(dense, pruned, group_by=["Male", "Young"])
    assert chosen.group_attributes == ("Male", "Young")
    assert set(chosen.groups["group"]) >= {"Male=True", "Young=False", "Male=True & Young=False"}


def test_predict_reloads_the_recorded_target_and_writes_groups(celeba, populations, tmp_path):
    root = celeba[0]
    dense, _ = populations
    model = dense / "seed-0000" / "model.pt"
    # Trained for Male: predict takes the target from run.json unless told.
    male = tmp_path / "male"
    data = load_dataset("celeba", data_root=root, target="Male")
    train_population(data, arch="small-cnn", out=male, population=1, train=TINY, prune=PruneConfig(sparsity=0.0),
                     device="cpu")  # fmt: skip
    out = tmp_path / "predicted"
    [written] = predict_files([male / "seed-0000" / "model.pt"], dataset="celeba", out=out, data_root=root, device="cpu")
    run = json.loads((written / RUN_FILE).read_text())
    assert run["dataset"]["target"] == "Male" and run["classes"] == ["not Male", "Male"]
    groups = pd.read_parquet(out / GROUPS_FILE)
    assert "Male" not in groups.columns and "Blond_Hair" in groups.columns
    # Told another target than the model's, it refuses before loading anything.
    with pytest.raises(ConfigError) as e:
        predict_files([model], dataset="celeba", target="Male", out=tmp_path / "other", data_root=root, device="cpu")
    assert str(e.value) == TARGET_CONFLICT.format(
        path=model, run=dense / "seed-0000" / RUN_FILE, found="Blond_Hair", target="Male"
    )
    assert not (tmp_path / "other").exists()


def test_a_dataset_without_attributes_writes_no_groups(tmp_path):
    from tiny import tiny_digits

    train_population(tiny_digits(), arch="small-cnn", out=tmp_path / "digits", population=1,
                     train=TrainConfig(epochs=1, batch_size=64), prune=PruneConfig(sparsity=0.0), device="cpu")  # fmt: skip
    assert not (tmp_path / "digits" / GROUPS_FILE).exists()
    assert "target" not in json.loads((tmp_path / "digits" / POPULATION_FILE).read_text())["spec"]


def test_groups_without_a_model_do_not_bind_the_directory(populations, tmp_path):
    from tiny import tiny_digits

    # A CelebA run killed after its first records but before its first model left these two.
    out = tmp_path / "taken-over"
    out.mkdir()
    for name in (POPULATION_FILE, GROUPS_FILE):
        shutil.copy(populations[0] / name, out / name)
    train_population(tiny_digits(), arch="small-cnn", out=out, population=1,
                     train=TrainConfig(epochs=1, batch_size=64), prune=PruneConfig(sparsity=0.0), device="cpu")  # fmt: skip
    assert json.loads((out / POPULATION_FILE).read_text())["spec"]["dataset"] == "digits"
    assert not (out / GROUPS_FILE).exists()  # CelebA's attributes do not describe digits


# --- the shipped study -----------------------------------------------------------------------------


def test_the_cie_study_spec_parses():
    from pie_audit.study._study import read_study

    study = read_study(ROOT / "studies" / "celeba-cie.toml")
    assert (study.dataset, study.target, study.group_by, study.groups) == ("celeba", "Blond_Hair", ("Male", "Young"), None)
    assert [(p.method, getattr(p.prune, "sparsity", None)) for p in study.populations] == [
        ("gmp", 0.0), ("gmp", 0.9), ("gmp", 0.95), ("int8", None),
    ]  # fmt: skip
    assert study.baseline.name == "dense"


STUDY = """
[study]
name = "tiny-celeba"
dataset = "celeba"
target = "Blond_Hair"
arch = "small-cnn"
models = 2
out = "runs"
group-by = ["Male", "Young"]

[train]
epochs = 1
batch-size = 8

[[population]]
name = "dense"
sparsity = 0.0

[[population]]
name = "gmp-50"
sparsity = 0.5
"""


def test_a_study_audits_the_groups_it_names(celeba, populations, tmp_path, monkeypatch):
    import pie_audit.report
    from pie_audit.study import read_study, run_study

    # The populations trained above are the study's (the same configuration): nothing to train.
    for population in populations:
        shutil.copytree(population, tmp_path / "runs" / population.name)
    written = {}
    monkeypatch.setattr(pie_audit.report, "pie_gallery", lambda result, data_root: None)
    monkeypatch.setattr(pie_audit.report, "write_sweep", lambda results, out, **kwargs: written.update(results=results))
    spec = tmp_path / "study.toml"
    spec.write_text(STUDY)
    outcome = run_study(read_study(spec), device="cpu", data_root=celeba[0])
    [(name, result)] = outcome.results
    assert (outcome.trained, outcome.skipped) == (0, 4)
    assert name == "gmp-50" and written["results"] == outcome.results
    assert result.group_attributes == ("Male", "Young") and result.group_source == tmp_path / "runs" / "dense" / GROUPS_FILE
    assert (tmp_path / "runs" / "gmp-50" / GROUPS_FILE).is_file()
