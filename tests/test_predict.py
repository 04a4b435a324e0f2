"""``pie_audit.predict`` and ``pie-audit predict``: what is written, what is refused, and that a
refused model file never gets to run code."""

import doctest
import hashlib
import importlib
import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import pie_audit
import pie_audit.cli._predict  # noqa: F401 - registers the command until cli/__init__ imports it
from pie_audit._atomic import ALREADY_EXISTS
from pie_audit.data._datasets import load_dataset
from pie_audit.errors import ConfigError, FormatError, OutputError
from pie_audit.training._models import ARCHITECTURES, SmallCNN
from pie_audit.prediction._files import SAME_NAME, model_name
from pie_audit.prediction._loading import (
    DATASET_CONFLICT,
    NEEDS_TRUST,
    NO_ARCH,
    NOT_A_STATE_DICT,
    SPLIT_CONFLICT,
    UNSAFE_EXPORT,
    UNSAFE_PICKLE,
)
from pie_audit.prediction._predict import (
    BAD_BATCH,
    BAD_OUTPUT,
    CLASS_COUNT,
    DUPLICATE_ID,
    EMPTY_LOADER,
    IDS_LENGTH,
    IDS_TWICE,
    LABEL_RANGE,
    LENGTH_MISMATCH,
    MEASURED_KEY,
    MIXED_BATCHES,
    NON_FINITE,
    NOT_A_MODULE,
    NOT_A_TENSOR,
    NOT_INTEGERS,
    measured_layers,
    predict,
)
from pie_audit.training._pruning import magnitude_masks, prunable_weights
from pie_audit.interchange import load_population, read_predictions

from cli_run import error_line, run

# The modules themselves: ``pie_audit.predict`` is also the name of the function the package exports.
PREDICTION_MODULES = [importlib.import_module(f"pie_audit.prediction.{name}") for name in ("_predict", "_loading", "_files")]

# ---- shared inputs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def fitted(digits):
    """State dicts of two small MLPs fitted to digits (about 95% test accuracy), seeds 0 and 1."""
    states = []
    for seed in (0, 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _mlp()
            optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
            for _ in range(150):
                loss = nn.functional.cross_entropy(model(digits.x_train), digits.y_train)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        states.append(model.state_dict())
    return states


def mlp(state) -> nn.Module:
    model = _mlp()
    model.load_state_dict(state)
    return model


def test_loader(digits, batch_size=64):
    return DataLoader(TensorDataset(digits.x_test, digits.y_test), batch_size=batch_size)


test_loader.__test__ = False  # a helper, not a test


def logits_of(model, x):
    """The model's own logits, computed without pie_audit."""
    model.eval()
    with torch.no_grad():
        return model(x)


def no_temporaries(directory: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in directory.rglob("*"))


def quietly(function, *args, **kwargs):
    """Call a deprecated torch.jit function without its FutureWarning (warnings are errors here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return function(*args, **kwargs)


# ---- predict(): what it writes ----------------------------------------------------------------


def test_predict_reproduces_the_models_own_accuracy(digits, fitted, tmp_path):
    model = mlp(fitted[0])
    logits = logits_of(model, digits.x_test)
    expected = (logits.argmax(1) == digits.y_test).double().mean().item()
    assert expected > 0.9  # a fitted model: agreement is not chance

    out = predict(model, test_loader(digits), tmp_path / "m", classes=digits.classes)

    assert out == tmp_path / "m"
    ids, labels, predictions = read_predictions(out / "predictions.parquet")
    np.testing.assert_array_equal(ids, np.arange(len(digits.y_test)))
    np.testing.assert_array_equal(labels, digits.y_test.numpy())
    np.testing.assert_array_equal(predictions, logits.argmax(1).numpy())
    table = pq.read_table(out / "predictions.parquet").to_pandas()
    probabilities = table[[f"prob_{k}" for k in range(10)]].to_numpy()
    assert table["prob_0"].dtype == np.float32
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-6)
    run = json.loads((out / "run.json").read_text())
    assert run["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert run["source"] == "pie_audit.predict"
    assert run["classes"] == list(digits.classes)
    assert run["model_class"] == "torch.nn.modules.container.Sequential"
    assert run["n_parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    assert run["dataset"] == {"n_examples": 450}
    assert run["sparsity"] == {"achieved": 0.0, "layers": {"1.weight": 0.0}, "n_weights": 2048, "n_zero": 0}
    assert run["device"] == "cpu"
    assert run["versions"]["pie_audit"] == pie_audit.__version__
    assert run["versions"]["torch"] == torch.__version__
    assert "finished_at" in run
    assert no_temporaries(tmp_path)


def test_populations_written_by_predict_are_read_and_compared(digits, fitted, tmp_path):
    for seed, state in enumerate(fitted):
        model = mlp(state)
        predict(model, test_loader(digits), tmp_path / "dense" / f"model-{seed}", classes=digits.classes, run={"seed": seed})
        weights = {name: p for name, p in model.named_parameters() if name == "1.weight"}
        with torch.no_grad():
            weights["1.weight"].mul_(magnitude_masks(weights, 0.5)["1.weight"])
        predict(
            model, test_loader(digits), tmp_path / "pruned" / f"model-{seed}", classes=digits.classes,
            run={"parent": {"seed": seed}, "dataset": {"name": "digits"}},
        )  # fmt: skip

    dense, pruned = load_population(tmp_path / "dense"), load_population(tmp_path / "pruned")
    assert dense.models == ("model-0", "model-1") and dense.classes == digits.classes
    assert pruned.runs[0]["sparsity"]["achieved"] == 0.5
    assert pruned.runs[1]["parent"] == {"seed": 1}
    assert pruned.runs[0]["dataset"] == {"name": "digits", **dense.runs[0]["dataset"]}
    result = pie_audit.compare(dense, pruned, n_bootstrap=50)
    # The parents recorded through run= pair every pruned model with its own dense model.
    assert result.test == "paired"
    assert result.baseline.n_models == result.pruned.n_models == 2
    assert len(result.examples) == 450


class _WithIds(Dataset):
    """Digits test examples under ids that are not their positions: 1000, 1007, 1014, ..."""

    def __init__(self, digits):
        self.x, self.y = digits.x_test, digits.y_test

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], 1000 + 7 * i


def test_ids_from_the_loader_are_used(digits, fitted, tmp_path):
    model = mlp(fitted[0])
    shuffled = DataLoader(_WithIds(digits), batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))
    out = predict(model, shuffled, tmp_path / "m")
    ids, labels, predictions = read_predictions(out / "predictions.parquet")
    np.testing.assert_array_equal(ids, 1000 + 7 * np.arange(450))
    np.testing.assert_array_equal(labels, digits.y_test.numpy())
    np.testing.assert_array_equal(predictions, logits_of(model, digits.x_test).argmax(1).numpy())


def test_example_ids_argument_names_the_examples_in_loader_order(digits, fitted, tmp_path):
    model = mlp(fitted[0])
    ids = np.arange(450)[::-1] * 2
    out = predict(model, test_loader(digits), tmp_path / "m", example_ids=ids)
    written, labels, predictions = read_predictions(out / "predictions.parquet")
    np.testing.assert_array_equal(written, np.arange(450) * 2)
    np.testing.assert_array_equal(labels, digits.y_test.numpy()[::-1])
    np.testing.assert_array_equal(predictions, logits_of(model, digits.x_test).argmax(1).numpy()[::-1])


@pytest.mark.parametrize("training", [True, False])
def test_mode_is_eval_while_predicting_and_restored_after(digits, fitted, tmp_path, training):
    model = mlp(fitted[0]).train(training)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append((module.training, torch.is_grad_enabled())))
    predict(model, test_loader(digits, batch_size=200), tmp_path / "m")
    assert seen == [(False, False)] * 3
    assert model.training is training
    # Also after a refusal.
    with pytest.raises(FormatError):
        predict(model, [(digits.x_test[:4], digits.y_test[:3])], tmp_path / "n")
    assert model.training is training


def test_measured_layers_are_prunings_for_every_kind_of_module():
    model = SmallCNN(1, 8, 10).eval()
    expected = prunable_weights(model)
    assert measured_layers(model) == expected == ["features.0.weight", "features.3.weight", "classifier.1.weight"]
    assert measured_layers(quietly(torch.jit.script, model)) == expected
    assert measured_layers(torch.export.export(model, (torch.zeros(2, 1, 8, 8),)).module()) == expected


@pytest.mark.parametrize("module", PREDICTION_MODULES, ids=lambda m: m.__name__)
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


# ---- predict(): what it refuses ---------------------------------------------------------------

X, Y = torch.randn(4, 64), torch.tensor([0, 1, 2, 3])


class _Returns(nn.Module):
    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output


@pytest.mark.parametrize(
    "model, loader, kwargs, error, message",
    [
        (_mlp(), [], {}, ConfigError, EMPTY_LOADER),
        (_mlp(), [{"x": X, "y": Y}], {}, FormatError, BAD_BATCH.format(index=0, what="a dict")),
        (_mlp(), [(X, Y, Y, Y)], {}, FormatError, BAD_BATCH.format(index=0, what="a tuple of 4 items")),
        (_mlp(), [X], {}, FormatError, BAD_BATCH.format(index=0, what="a Tensor")),
        (_mlp(), [(X, Y), (X, Y, Y)], {}, FormatError, MIXED_BATCHES.format(index=1, n=3, first=2)),
        (_mlp(), [(X.numpy(), Y)], {}, FormatError, NOT_A_TENSOR.format(index=0, what="a ndarray")),
        (_mlp(), [(X, Y.float())], {}, FormatError, NOT_INTEGERS.format(index=0, what="labels", detail="dtype float32")),
        (_mlp(), [(X, Y[:3])], {}, FormatError, LENGTH_MISMATCH.format(index=0, n=3, what="labels", n_out=4)),
        (_mlp(), [(X, Y, Y[:2])], {}, FormatError, LENGTH_MISMATCH.format(index=0, n=2, what="example ids", n_out=4)),
        (_mlp(), [(X, Y, torch.tensor([0, 1, 2, 1]))], {}, FormatError, DUPLICATE_ID.format(value=1)),
        (_mlp(), [(X, Y)], {"example_ids": [0, 1, 1, 2]}, FormatError, DUPLICATE_ID.format(value=1)),
        (_mlp(), [(X, Y + 7)], {}, FormatError, LABEL_RANGE.format(index=0, label=10, n=10, last=9)),
        (_mlp(), [(X, Y)], {"classes": ["a", "b", "c", "d"]}, FormatError,
         CLASS_COUNT.format(index=0, n=10, expected="there are 4 classes")),
        (_mlp(), [(X, Y), (X[:, :3], Y)], {}, RuntimeError, None),  # the model's own error, untouched
        (_Returns((torch.zeros(4, 10),)), [(X, Y)], {}, FormatError, BAD_OUTPUT.format(index=0, what="a tuple of 1 items")),
        (_Returns(torch.zeros(4, 10, 1)), [(X, Y)], {}, FormatError, BAD_OUTPUT.format(index=0, what="a tensor of shape (4, 10, 1)")),
        (_Returns(torch.full((4, 10), float("nan"))), [(X, Y)], {}, FormatError, NON_FINITE.format(index=0)),
        (_mlp(), [(X, Y, Y)], {"example_ids": [0, 1, 2, 3]}, ConfigError, IDS_TWICE),
        (_mlp(), [(X, Y)], {"example_ids": [0, 1, 2]}, ConfigError, IDS_LENGTH.format(n=3, total=4)),
        (_mlp(), [(X, Y)], {"run": {"accuracy": 1.0}}, ConfigError, MEASURED_KEY.format(key="accuracy")),
        (_mlp(), [(X, Y)], {"run": {"dataset": {"n_examples": 4}}}, ConfigError, MEASURED_KEY.format(key="dataset.n_examples")),
        (lambda x: x, [(X, Y)], {}, ConfigError, NOT_A_MODULE.format(what="function")),
    ],
)  # fmt: skip
def test_refusals_write_nothing(tmp_path, model, loader, kwargs, error, message):
    with pytest.raises(error) as e:
        predict(model, loader, tmp_path / "out", **kwargs)
    if message is not None:
        assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_refused_before_the_model_runs(tmp_path):
    (tmp_path / "out").mkdir()
    model = _Returns(torch.zeros(4, 10))
    model.register_forward_hook(lambda *args: pytest.fail("the model ran"))
    with pytest.raises(OutputError) as e:
        predict(model, [(X, Y)], tmp_path / "out")
    assert str(e.value) == ALREADY_EXISTS.format(path=tmp_path / "out")


# ---- pie-audit predict ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny digits population from ``pie-audit train``: runs/x/seed-0000, seed-0001."""
    root = tmp_path_factory.mktemp("trained")
    assert run("train", "--dataset", "digits", "--population", 2, "--epochs", 1, "--out", root / "runs" / "x", "--quiet") == 0
    return root / "runs" / "x"


def test_cli_reproduces_train_predictions_exactly(trained, tmp_path, capsys):
    files = sorted(trained.glob("seed-*/model.pt"))
    assert run("predict", *files, "--dataset", "digits", "--out", tmp_path / "y") == 0
    assert capsys.readouterr().out.count("accuracy") == 2
    for file in files:
        ours, theirs = tmp_path / "y" / file.parent.name, file.parent
        a = pq.read_table(ours / "predictions.parquet").to_pandas()
        b = pq.read_table(theirs / "predictions.parquet").to_pandas()
        assert list(a.columns) == list(b.columns)
        for column in ("example_id", "label", "prediction"):
            np.testing.assert_array_equal(a[column], b[column])
        np.testing.assert_allclose(a.filter(like="prob_").to_numpy(), b.filter(like="prob_").to_numpy(), atol=1e-5)
        mine, train = json.loads((ours / "run.json").read_text()), json.loads((theirs / "run.json").read_text())
        assert mine["source_file"] == str(file.resolve())
        assert mine["source_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert mine["source_format"] == "state_dict"
        assert mine["arch"] == "small-cnn"
        assert mine["dataset"] == train["dataset"]  # name, split, n_examples and the same hash
        assert mine["classes"] == train["classes"]
        assert mine["sparsity"] == {k: v for k, v in train["sparsity"].items() if k != "target"}
        assert mine["accuracy"] == pytest.approx(train["accuracy"], abs=1e-12)
        assert mine["command"][0] == "pie-audit"
    population = load_population(tmp_path / "y")
    assert population.models == ("seed-0000", "seed-0001")
    assert no_temporaries(tmp_path)


def test_cli_adds_to_a_population_but_never_replaces_a_model(trained, tmp_path, capsys):
    first, second = sorted(trained.glob("seed-*/model.pt"))
    assert run("predict", first, "--dataset", "digits", "--out", tmp_path / "y", "--quiet") == 0
    before = (tmp_path / "y" / "seed-0000" / "run.json").read_text()
    assert run("predict", second, first, "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == ALREADY_EXISTS.format(path=tmp_path / "y" / "seed-0000")
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["seed-0000"]
    assert (tmp_path / "y" / "seed-0000" / "run.json").read_text() == before
    assert run("predict", second, "--dataset", "digits", "--out", tmp_path / "y", "--quiet") == 0
    assert load_population(tmp_path / "y").models == ("seed-0000", "seed-0001")


def _small_cnn(trained) -> nn.Module:
    model = SmallCNN(1, 8, 10)
    model.load_state_dict(torch.load(trained / "seed-0000" / "model.pt", weights_only=True))
    return model.eval()


@pytest.mark.parametrize(
    "kind, save",
    [
        ("torchscript", lambda m, f: quietly(torch.jit.save, quietly(torch.jit.script, m), f)),
        # A static batch of 7 (torch.export's default fixes the example's): the last of
        # 450 examples are fed padded.
        ("torch.export", lambda m, f: torch.export.save(torch.export.export(m, (torch.zeros(7, 1, 8, 8),)), f)),
        ("torch.export", lambda m, f: torch.export.save(
            torch.export.export(m, (torch.zeros(8, 1, 8, 8),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), f)),
    ],
    ids=["torchscript", "export-static-batch", "export-dynamic-batch"],
)  # fmt: skip
def test_cli_programs_need_trust_and_then_agree_with_the_state_dict(trained, tmp_path, capsys, kind, save):
    file = tmp_path / "program.pt2"
    save(_small_cnn(trained), file)
    words = {"torchscript": "TorchScript archive", "torch.export": "torch.export program"}[kind]

    assert run("predict", file, "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == NEEDS_TRUST.format(path=file, kind=words)
    assert not (tmp_path / "y").exists()

    assert run("predict", file, "--dataset", "digits", "--out", tmp_path / "y", "--trust-code", "--batch-size", 100) == 0
    _, _, ours = read_predictions(tmp_path / "y" / "program" / "predictions.parquet")
    _, _, theirs = read_predictions(trained / "seed-0000" / "predictions.parquet")
    np.testing.assert_array_equal(ours, theirs)
    record = json.loads((tmp_path / "y" / "program" / "run.json").read_text())
    assert record["source_format"] == kind
    assert record["model_class"] == "pie_audit.training._models.SmallCNN"
    train = json.loads((trained / "seed-0000" / "run.json").read_text())
    assert record["sparsity"]["layers"] == train["sparsity"]["layers"]
    assert "arch" not in record


class _RunsCode:
    """Unpickling this creates a file: the side effect a refused model file must never have."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _torch_save_bytes(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _rewrite_zip(source: bytes, replace: dict, add: dict = {}) -> bytes:  # noqa: B006 - read only
    """``source`` with the entries ending in a key of ``replace`` replaced (by bytes, or by a
    function of the old bytes), and ``add``'s entries added under its top-level directory."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as archive, zipfile.ZipFile(out, "w") as rewritten:
        root = archive.namelist()[0].split("/")[0]
        for name in archive.namelist():
            data = archive.read(name)
            for suffix, new in replace.items():
                if name.endswith(suffix):
                    data = new(data) if callable(new) else new
            rewritten.writestr(name, data)
        for name, data in add.items():
            rewritten.writestr(f"{root}/{name}", data)
    return out.getvalue()


def _pickled_weight(config: bytes) -> bytes:
    record = json.loads(config)
    record["config"]["features.0.weight"]["use_pickle"] = True
    return json.dumps(record).encode()


def _malicious_files(tmp_path, trained):
    """(file, expected message or (prefix, suffix), needs --trust-code) for files whose loading
    would create ``tmp_path / "pwned"``."""
    marker = tmp_path / "pwned"
    evil = _RunsCode(marker)
    plain = tmp_path / "plain" / "model.pt"
    plain.parent.mkdir()
    plain.write_bytes(pickle.dumps(evil))
    zipped = tmp_path / "zipped.pt"
    zipped.write_bytes(_torch_save_bytes(evil))
    # A torch.save archive dressed up as TorchScript: torch.jit.load's own unpickler must refuse it.
    script = tmp_path / "script.pt"
    script.write_bytes(_rewrite_zip(_torch_save_bytes(evil, pickle_protocol=2), {}, {"constants.pkl": pickle.dumps((), 2), "code/__torch__/m.py": b""}))
    exported = io.BytesIO()
    torch.export.save(torch.export.export(_small_cnn(trained), (torch.zeros(2, 1, 8, 8),)), exported)
    exported = exported.getvalue()
    # torch.export.load retries sample inputs with weights_only=False, and unpickles weights
    # marked use_pickle without weights_only: both would run this code.
    inputs = tmp_path / "inputs.pt2"
    inputs.write_bytes(_rewrite_zip(exported, {"data/sample_inputs/model.pt": _torch_save_bytes(evil)}))
    weight = tmp_path / "weight.pt2"
    weight.write_bytes(
        _rewrite_zip(exported, {"model_weights_config.json": _pickled_weight, "data/weights/weight_0": _torch_save_bytes(evil)})
    )
    native = tmp_path / "native.pt2"
    native.write_bytes(_rewrite_zip(exported, {}, {"data/aotinductor/model/model.so": b"\x7fELF"}))
    return marker, [
        (plain, UNSAFE_PICKLE.format(path=plain, detail="Unsupported operand 149"), False),
        (zipped, UNSAFE_PICKLE.format(path=zipped, detail="Unsupported global: GLOBAL exec"), False),
        (script, NEEDS_TRUST.format(path=script, kind="TorchScript archive"), False),
        (script, (f"{script}: a TorchScript archive that torch.jit.load cannot load (", "__builtin__.exec)"), True),
        (inputs, NEEDS_TRUST.format(path=inputs, kind="torch.export program"), False),
        (inputs, UNSAFE_EXPORT.format(path=inputs, reason="has sample inputs of more than tensors (Unsupported global: GLOBAL exec)"), True),
        (weight, UNSAFE_EXPORT.format(path=weight, reason="stores 'features.0.weight' as a pickle or an object"), True),
        (native, UNSAFE_EXPORT.format(path=native, reason="holds 'data/aotinductor/model/model.so', which pie-audit does not load"), True),
    ]


def test_cli_refuses_model_files_that_would_run_code(trained, tmp_path, capsys):
    marker, cases = _malicious_files(tmp_path, trained)
    # The payload works: plain unpickling would have created the marker.
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()
    for file, message, trust in cases:
        args = ["predict", file, "--dataset", "digits", "--arch", "small-cnn", "--out", tmp_path / "y"]
        assert run(*args, *(["--trust-code"] if trust else [])) == 2, file
        line = error_line(capsys)
        if isinstance(message, tuple):
            assert line.startswith(message[0]) and line.endswith(message[1]), line
        else:
            assert line == message
        assert not marker.exists(), file
        assert not (tmp_path / "y").exists()


def test_cli_state_dict_needs_an_architecture(trained, tmp_path, capsys):
    loose = tmp_path / "loose.pt"
    loose.write_bytes((trained / "seed-0000" / "model.pt").read_bytes())
    assert run("predict", loose, "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == NO_ARCH.format(path=loose, choices=", ".join(ARCHITECTURES))
    assert run("predict", loose, "--dataset", "digits", "--out", tmp_path / "y", "--arch", "resnet18-cifar") == 2
    assert error_line(capsys).startswith(f"{loose}: a state dict that does not fit resnet18-cifar for digits (Error(s) in loading state_dict")
    assert run("predict", loose, "--dataset", "digits", "--out", tmp_path / "y", "--arch", "small-cnn", "-q") == 0
    assert (tmp_path / "y" / "loose" / "predictions.parquet").is_file()


def test_cli_wrong_dataset_is_refused_before_it_is_loaded(trained, tmp_path, capsys):
    file = trained / "seed-0000" / "model.pt"
    assert run("predict", file, "--dataset", "cifar10", "--data-root", tmp_path / "nowhere", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == DATASET_CONFLICT.format(path=file, run=file.parent / "run.json", found="digits", dataset="cifar10")
    assert not (tmp_path / "y").exists()


def test_cli_refuses_a_model_of_another_test_split_but_reads_older_records(trained, tmp_path, capsys):
    from pie_audit.data._datasets import dataset_hash

    digits = load_dataset("digits")
    record = json.loads((trained / "seed-0000" / "run.json").read_text())
    for name, recorded in (("other", "sha256:" + "0" * 64), ("older", dataset_hash(digits.example_ids, digits.y_test.numpy()))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes((trained / "seed-0000" / "model.pt").read_bytes())
        record["dataset"]["hash"] = recorded
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    file = tmp_path / "other" / "model.pt"
    assert run("predict", file, "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == SPLIT_CONFLICT.format(
        path=file, run=file.parent / "run.json", dataset="digits", found="sha256:" + "0" * 64,
        now=json.loads((trained / "seed-0000" / "run.json").read_text())["dataset"]["hash"],
    )  # fmt: skip
    # A record from before the hash covered the images: ids and labels only.
    assert run("predict", tmp_path / "older" / "model.pt", "--dataset", "digits", "--out", tmp_path / "y", "-q") == 0


def test_cli_writes_nothing_unless_every_file_loads(trained, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": torch.load(trained / "seed-0000" / "model.pt", weights_only=True), "epoch": 3}, checkpoint)
    assert run("predict", trained / "seed-0001" / "model.pt", checkpoint, "--dataset", "digits", "--out", tmp_path / "y", "--arch", "small-cnn") == 2
    assert error_line(capsys) == NOT_A_STATE_DICT.format(
        path=checkpoint, what="a dict with keys 'model', 'epoch'", hint="; save model.state_dict() alone"
    )
    assert not (tmp_path / "y").exists()


def test_cli_refuses_two_files_of_one_model_name(trained, tmp_path, capsys):
    other = tmp_path / "elsewhere" / "seed-0000" / "model.pt"
    other.parent.mkdir(parents=True)
    other.write_bytes((trained / "seed-0000" / "model.pt").read_bytes())
    assert run("predict", trained / "seed-0000" / "model.pt", other, "--dataset", "digits", "--arch", "small-cnn", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == SAME_NAME.format(path=trained / "seed-0000" / "model.pt", other=other, name="seed-0000")


def test_model_name():
    assert model_name("runs/x/seed-0003/model.pt") == "seed-0003"
    assert model_name("exports/int8.pt2") == "int8"
    assert model_name("model.pt") == Path.cwd().name
