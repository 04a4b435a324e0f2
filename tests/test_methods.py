"""Compression methods: random masks, one-shot pruning of a parent, lottery tickets."""

import json
import os
from dataclasses import replace

import pytest
import torch

from pie_audit.training.methods import _lottery as lottery_module
from pie_audit.errors import ConfigError, OutputError
from pie_audit.training.methods import (
    METHODS,
    NEEDS_FROM,
    NEEDS_SPARSITY,
    OPTION_NOT_USED,
    PARENT_MISSING,
    PARENT_NOT_A_POPULATION,
    PARENT_NOT_DENSE,
    PARENT_OTHER,
    UNKNOWN_METHOD,
    NO_CONV,
    LotteryTicket,
    OneShotPruning,
    RandomPruning,
    StructuredPruning,
    make_method,
)
from pie_audit.training._train import train_population
from pie_audit.training._pruning import channel_report, filter_masks, magnitude_masks
from pie_audit.training._loop import init_model, train_models
from pie_audit.training.methods import PruneConfig

from tiny import TINY_CONFIG, tiny_digits

SHORT = replace(TINY_CONFIG, epochs=2)
NAMES = ("features.0.weight", "features.3.weight", "classifier.1.weight")


def _prunable(model_or_state):
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    return {n: state[n] for n in NAMES}


# ---- building a method from the options given -----------------------------------------------


def test_make_method_builds_each_method_from_its_options():
    assert make_method("gmp", {}) == PruneConfig()
    assert make_method("gmp", {"sparsity": 0.5, "prune-begin": 0.1, "exclude": ["fc1"]}) == PruneConfig(
        sparsity=0.5, begin=0.1, exclude=("fc1",)
    )
    assert make_method("random", {"sparsity": 0.9, "scope": None}) == RandomPruning(sparsity=0.9)
    assert make_method("oneshot", {"sparsity": 0.9, "from": "runs/b", "finetune-epochs": 3}) == OneShotPruning(
        sparsity=0.9, source="runs/b", finetune_epochs=3
    )
    assert make_method("lottery", {"sparsity": 0.8, "rounds": 2}) == LotteryTicket(sparsity=0.8, rounds=2)
    assert make_method("structured", {"sparsity": 0.5, "prune-end": 0.6, "prune-every": 3}) == StructuredPruning(
        sparsity=0.5, end=0.6, frequency=3
    )


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("magic", {}, UNKNOWN_METHOD.format(method="magic", choices=", ".join(METHODS))),
        ("random", {"sparsity": 0.9, "prune-begin": 0.1},
         OPTION_NOT_USED.format(option="prune-begin", method="random", options="sparsity, exclude, prune-final")),
        ("gmp", {"finetune-epochs": 2},
         OPTION_NOT_USED.format(option="finetune-epochs", method="gmp",
                                options="sparsity, scope, prune-begin, prune-end, prune-every, exclude, prune-final")),
        ("gmp", {"from": "runs/b"},
         OPTION_NOT_USED.format(option="from", method="gmp",
                                options="sparsity, scope, prune-begin, prune-end, prune-every, exclude, prune-final")),
        ("oneshot", {"sparsity": 0.9}, NEEDS_FROM.format(method="oneshot")),
        ("random", {}, NEEDS_SPARSITY.format(method="random", sparsity=None)),
        ("random", {"sparsity": 0.0}, NEEDS_SPARSITY.format(method="random", sparsity=0.0)),
        ("lottery", {"sparsity": 0.9, "rounds": 0}, "rounds must be a whole number >= 1, got 0"),
        ("lottery", {"sparsity": 0.9, "rewind": 1.0}, "rewind must be a fraction of training in [0, 1), got 1.0"),
        ("oneshot", {"sparsity": 0.9, "from": "b", "scope": "row"}, "unknown pruning scope 'row'; choose layer or global"),
        ("structured", {"sparsity": 0.5, "scope": "global"},
         OPTION_NOT_USED.format(option="scope", method="structured",
                                options="sparsity, prune-begin, prune-end, prune-every, exclude")),
        ("structured", {"sparsity": 0.5, "prune-begin": 0.7, "prune-end": 0.6},
         "pruning must satisfy 0 <= begin <= end <= 1, got begin=0.7 end=0.6"),
        ("structured", {"sparsity": 1.0}, NEEDS_SPARSITY.format(method="structured", sparsity=1.0)),
    ],
)  # fmt: skip
def test_make_method_refuses(method, options, message):
    with pytest.raises(ConfigError) as e:
        make_method(method, options)
    assert str(e.value) == message


# ---- random -----------------------------------------------------------------------------------


def test_random_masks_are_exact_per_layer_differ_between_seeds_ignore_magnitude_and_hold():
    prune = RandomPruning(sparsity=0.75)
    held = []

    def on_step(step, params, masks):
        held.append(all(torch.all(params[n][~masks[n]] == 0) for n in NAMES))

    results = train_models(tiny_digits(), arch="small-cnn", seeds=[0, 1], config=SHORT, prune=prune,
                           start=prune.start, on_step=on_step)  # fmt: skip
    assert held and all(held)
    for r in results:
        for name in NAMES:
            n = r.state_dict[name].numel()
            assert int((r.state_dict[name] == 0).sum()) == round(0.75 * n)
        assert r.sparsity["target"] == 0.75
        assert r.schedule["kind"] == "fixed" and r.schedule["origin"] == "random"
    zeros = [r.state_dict["features.3.weight"] == 0 for r in results]
    assert not torch.equal(zeros[0], zeros[1])
    # Drawn from the seed, not from magnitude: the initial model's smallest weights are not the
    # pruned ones (magnitude pruning would make the overlap 100%; chance makes it about 75%).
    start = prune.start("small-cnn", tiny_digits(), 0)
    initial = init_model("small-cnn", tiny_digits(), 0)
    w = initial.state_dict()["classifier.1.weight"]
    by_magnitude = ~magnitude_masks({"classifier.1.weight": w}, 0.75)["classifier.1.weight"]
    pruned = start.state_dict()["classifier.1.weight"] == 0
    overlap = float((pruned & by_magnitude).sum() / by_magnitude.sum())
    assert 0.65 < overlap < 0.85
    # And the kept weights are the initial ones: trained from scratch, only masked.
    assert torch.equal(start.state_dict()["classifier.1.weight"][~pruned], w[~pruned])


def test_random_masks_come_from_the_seed_alone():
    prune = RandomPruning(sparsity=0.5)
    a = prune.start("small-cnn", tiny_digits(), 3).state_dict()["features.0.weight"]
    b = prune.start("small-cnn", tiny_digits(), 3).state_dict()["features.0.weight"]
    assert torch.equal(a, b)


# ---- one-shot, from a parent population ------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods") / "baseline"
    train_population(tiny_digits(), arch="small-cnn", out=out, population=2, train=SHORT,
                     prune=PruneConfig(), device="cpu")  # fmt: skip
    return out


def test_oneshot_prunes_each_parent_fine_tunes_with_the_mask_held_and_records_the_parent(baseline, tmp_path):
    import pie_audit

    prune = OneShotPruning(sparsity=0.8, source=str(baseline), finetune_epochs=1)
    out = tmp_path / "oneshot"
    dirs = train_population(tiny_digits(), arch="small-cnn", out=out, population=2, train=SHORT,
                            prune=prune, device="cpu")  # fmt: skip
    for seed, directory in enumerate(dirs):
        run = json.loads((directory / "run.json").read_text())
        parent_run = json.loads((baseline / f"seed-{seed:04d}" / "run.json").read_text())
        assert run["method"] == "oneshot"
        # Relative to the population, so that a moved study still names its parents.
        assert run["method_params"]["source"] == os.path.relpath(baseline.resolve(), out.resolve())
        assert run["parent"] == {
            "seed": seed,
            "path": os.path.relpath((baseline / f"seed-{seed:04d}").resolve(), out.resolve()),
            "model_sha256": parent_run["files"]["model.pt"]["sha256"],
        }
        assert run["finetune"] == {"epochs": 1, "lr": SHORT.lr * 0.1}
        assert run["sparsity"]["target"] == 0.8
        parent = torch.load(baseline / f"seed-{seed:04d}" / "model.pt", weights_only=True)
        child = torch.load(directory / "model.pt", weights_only=True)
        # The zeros are exactly the parent's smallest weights: pruned once, held to the end.
        expected = magnitude_masks(_prunable(parent), 0.8)
        for name in NAMES:
            assert torch.equal(child[name] != 0, expected[name])
    spec = json.loads((out / "population.json").read_text())["spec"]
    assert spec["method"] == "oneshot"
    result = pie_audit.compare(baseline, out)
    assert result.test == "paired"


def test_oneshot_refuses_a_parent_it_cannot_use_before_writing_anything(baseline, tmp_path):
    pruned = tmp_path / "pruned"
    train_population(tiny_digits(), arch="small-cnn", out=pruned, population=1, train=replace(SHORT, epochs=1),
                     prune=PruneConfig(sparsity=0.5, begin=0.0, end=0.5), device="cpu")  # fmt: skip
    other = tmp_path / "other-arch"
    other.mkdir()
    record = json.loads((baseline / "population.json").read_text())
    record["spec"]["arch"] = "resnet18-cifar"
    (other / "population.json").write_text(json.dumps(record))
    cases = [
        (tmp_path / "nowhere", 2, PARENT_NOT_A_POPULATION.format(path=tmp_path / "nowhere", reason="no population.json")),
        (pruned, 1, PARENT_NOT_DENSE.format(path=pruned, method="gmp", sparsity=0.5, derived="oneshot")),
        (other, 2, PARENT_OTHER.format(path=other, what="architecture", theirs="resnet18-cifar", ours="small-cnn")),
        (baseline, 4, PARENT_MISSING.format(path=baseline, seeds="2, 3")),
    ]
    for source, population, message in cases:
        out = tmp_path / "out"
        with pytest.raises(ConfigError) as e:
            train_population(tiny_digits(), arch="small-cnn", out=out, population=population, train=SHORT,
                             prune=OneShotPruning(sparsity=0.8, source=str(source)), device="cpu")  # fmt: skip
        assert str(e.value) == message
        assert not out.exists()


def test_a_population_of_another_method_is_refused_on_resume(baseline, tmp_path):
    out = tmp_path / "pop"
    tiny = replace(SHORT, epochs=1)
    train_population(tiny_digits(), arch="small-cnn", out=out, population=1, train=tiny,
                     prune=RandomPruning(sparsity=0.5), device="cpu")  # fmt: skip
    with pytest.raises(OutputError, match="method is 'random' there, 'gmp' now"):
        train_population(tiny_digits(), arch="small-cnn", out=out, population=1, train=tiny,
                         prune=PruneConfig(sparsity=0.5), device="cpu")  # fmt: skip
    # The same method resumes: nothing left to train.
    train_population(tiny_digits(), arch="small-cnn", out=out, population=1, train=tiny,
                     prune=RandomPruning(sparsity=0.5), device="cpu")  # fmt: skip


# ---- lottery ------------------------------------------------------------------------------------


def test_lottery_prunes_in_rounds_to_the_target_and_retrains_from_the_rewound_weights(monkeypatch):
    runs = []  # per call of train_models: (the rewound weights seen, the starting models)
    real = lottery_module.train_models

    def spy(dataset, *, seeds, start=init_model, on_step=None, **kw):
        record = {"starts": {}, "seen": None, "held": []}

        def watched_start(arch, dataset, seed):
            model = start(arch, dataset, seed)
            record["starts"][seed] = {n: p.detach().clone() for n, p in model.named_parameters()}
            return model

        def watched_step(step, params, masks):
            if on_step is not None:
                on_step(step, params, masks)
            if step == 3:  # rewind = 4 / 16 steps
                record["seen"] = {n: p.detach().clone() for n, p in params.items()}
            if masks is not None:
                record["held"].append(all(torch.all(params[n][~masks[n]] == 0) for n in masks))

        runs.append(record)
        return real(dataset, seeds=seeds, start=watched_start, on_step=watched_step, **kw)

    monkeypatch.setattr(lottery_module, "train_models", spy)
    prune = LotteryTicket(sparsity=0.875, rounds=3, rewind=0.25)
    results = prune.train(tiny_digits(), arch="small-cnn", seeds=[0, 1], config=SHORT)
    assert len(runs) == 4  # the dense run and three rounds
    rewound = runs[0]["seen"]
    for round_ in runs[1:]:
        assert round_["held"] and all(round_["held"])
        for i, seed in enumerate([0, 1]):
            for name, start in round_["starts"][seed].items():
                kept = start != 0
                assert torch.equal(start[kept], rewound[name][i][kept])
    for r in results:
        for name in NAMES:
            assert int((r.state_dict[name] == 0).sum()) == round(0.875 * r.state_dict[name].numel())
        assert r.sparsity["target"] == 0.875
        assert r.steps == 4 * 16
        assert r.record["lottery"]["rewind_step"] == 4
        assert r.record["lottery"]["sparsity_per_round"] == pytest.approx([0.5, 0.75, 0.875])


# ---- structured ---------------------------------------------------------------------------------

CONVS = ("features.0.weight", "features.3.weight")


def test_structured_removes_whole_filters_of_smallest_norm_holds_them_and_records_channels(tmp_path):
    prune = StructuredPruning(sparsity=0.75, begin=0.1, end=0.5)
    seen = {}

    def on_step(step, params, masks):
        if masks is None:
            return
        for name in CONVS:
            dead = ~masks[name].flatten(start_dim=2).any(dim=-1)  # (K, C_out)
            # A masked filter is zero, and so are its bias: the whole feature map is gone.
            assert torch.all(params[name][dead] == 0)
            assert torch.all(params[name.replace("weight", "bias")][dead] == 0)
            # Once removed, a filter stays removed while the target grows.
            if name in seen:
                assert torch.all(dead >= seen[name])
            seen[name] = dead

    results = train_models(tiny_digits(), arch="small-cnn", seeds=[0, 1], config=SHORT, prune=prune,
                           on_step=on_step, finish=prune.finish)  # fmt: skip
    for r in results:
        for name in CONVS:
            w, b = r.state_dict[name], r.state_dict[name.replace("weight", "bias")]
            dead = (w.flatten(start_dim=1) == 0).all(dim=1)
            assert int(dead.sum()) == round(0.75 * w.shape[0])
            assert torch.all(b[dead] == 0) and torch.all(b[~dead] != 0)
            assert torch.all(w[~dead].flatten(start_dim=1).norm(dim=1) > 0)
        # The final classifier and the hidden linear layer keep every unit.
        assert int((r.state_dict["classifier.1.weight"] == 0).sum()) == 0
        channels = r.sparsity["channels"]
        assert channels["n_channels"] == 32 + 64 and channels["n_zero"] == 24 + 48
        assert channels["achieved"] == 0.75 and channels["target"] == 0.75
        assert r.sparsity["target"] == 0.75
        zeros = sum(int((r.state_dict[n] == 0).sum()) for n in CONVS)
        assert r.sparsity["n_zero"] == zeros and r.sparsity["achieved"] == r.sparsity["weights_target"]
    # Each model ranks its own filters: the two seeds keep different channels.
    assert not torch.equal(results[0].state_dict["features.3.weight"] == 0, results[1].state_dict["features.3.weight"] == 0)


def test_filter_masks_remove_the_smallest_l2_norms_per_model_and_keep_removed_ones_out():
    # Two models, four filters of two weights each; L2 norms written out by hand.
    w = torch.tensor([
        [[3.0, 4.0], [0.0, 1.0], [1.0, 1.0], [6.0, 8.0]],    # norms 5, 1, 1.41, 10
        [[0.0, 0.5], [2.0, 0.0], [0.0, 9.0], [0.3, 0.4]],    # norms 0.5, 2, 9, 0.5
    ]).view(2, 4, 2, 1, 1)  # fmt: skip
    masks = filter_masks({"w": w}, 0.5, batch_dims=1)["w"]
    # Ties (0.5, 0.5) fall on the lower channel index.
    assert masks.tolist() == [[True, False, False, True], [False, True, True, False]]
    previous = torch.tensor([[False, True, True, True], [True, True, True, True]])
    masks = filter_masks({"w": w}, 0.5, previous={"w": previous}, batch_dims=1)["w"]
    assert masks.tolist() == [[False, False, True, True], [False, True, True, False]]
    report = channel_report({"w": torch.where(masks[0].view(4, 1, 1, 1), w[0], 0.0)}, ["w"])
    assert report == {"achieved": 0.5, "layers": {"w": 0.5}, "n_channels": 4, "n_zero": 2}


def test_structured_on_a_resnet_zeroes_the_batchnorm_of_a_removed_filter():
    from pie_audit.training._pruning import channel_coupled, conv_weights

    model = init_model("resnet18-cifar", tiny_digits(), 0)
    names = conv_weights(model)
    coupled = channel_coupled(model, names)
    assert coupled["conv1.weight"] == ("bn1.weight", "bn1.bias")
    assert coupled["layer2.0.conv2.weight"] == ("layer2.0.bn2.weight", "layer2.0.bn2.bias")
    assert coupled["layer2.0.downsample.0.weight"] == ("layer2.0.downsample.1.weight", "layer2.0.downsample.1.bias")
    policy = StructuredPruning(sparsity=0.5, begin=0.0, end=0.0).policy(model, total_steps=10)
    params = dict(model.named_parameters())
    masks = policy(0, {n: params[n].unsqueeze(0) for n in policy.names}, None)
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask[0])
    outputs = []
    model.bn1.register_forward_hook(lambda m, i, o: outputs.append(o))
    removed = ~masks["conv1.weight"][0].flatten(start_dim=1).any(dim=1)
    assert int(removed.sum()) == 32
    for mode in (True, False):  # the feature map is zero in training and in evaluation
        model.train(mode)
        model(torch.randn(2, 1, 8, 8))
        assert torch.all(outputs[-1][:, removed] == 0) and torch.any(outputs[-1][:, ~removed] != 0)
    assert policy.target == 0.5


def test_structured_refuses_a_model_left_without_conv_layers():
    with pytest.raises(ConfigError) as e:
        StructuredPruning(sparsity=0.5, exclude=("features.*",)).policy(
            init_model("small-cnn", tiny_digits(), 0), total_steps=100
        )
    assert str(e.value) == NO_CONV.format(arch="SmallCNN", exclude="features.*")


# ---- int8 ---------------------------------------------------------------------------------------


# torch's own rebuilding of quantized tensors in torch.load says this; nothing of ours does.
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
def test_int8_quantizes_each_parent_records_it_and_pairs_with_it(baseline, tmp_path):
    import numpy as np

    import pie_audit
    from pie_audit.training.methods import Int8Quantization, calibration_indices
    from pie_audit.training._quantization import load_quantized
    from pie_audit.interchange import read_predictions

    out = tmp_path / "int8"
    dirs = train_population(tiny_digits(), arch="small-cnn", out=out, population=2, train=SHORT,
                            prune=Int8Quantization(source=str(baseline), calibration_images=100),
                            device="cpu")  # fmt: skip
    data = tiny_digits()
    for seed, directory in enumerate(dirs):
        run = json.loads((directory / "run.json").read_text())
        parent_run = json.loads((baseline / f"seed-{seed:04d}" / "run.json").read_text())
        assert run["method"] == "int8" and run["device"] == "cpu" and run["steps"] == 0
        assert run["parent"]["seed"] == seed
        assert run["parent"]["model_sha256"] == parent_run["files"]["model.pt"]["sha256"]
        assert run["quantization"]["backend"] == "x86"
        assert run["quantization"]["calibration_images"] == 100
        assert run["sparsity"]["target"] == 0.0 and 0.0 <= run["sparsity"]["achieved"] < 0.1
        # The saved model holds int8 weights and loads with weights_only into the quantized graph.
        state = torch.load(directory / "model.pt", weights_only=True)
        assert state["features.0.weight"].dtype == torch.qint8
        model = load_quantized("small-cnn", in_channels=1, image_size=8, num_classes=10, state_dict=state)
        with torch.no_grad():
            logits = model(data.x_test)
        # What the population holds is what the saved model predicts.
        ids, labels, stored = read_predictions(directory / "predictions.parquet")
        order = np.argsort(np.asarray(data.example_ids), kind="stable")
        assert np.array_equal(stored, logits.argmax(1).numpy()[order])
        assert run["accuracy"] == pytest.approx(float((stored == labels).mean()))
        parent = init_model("small-cnn", data, seed)
        parent.load_state_dict(torch.load(baseline / f"seed-{seed:04d}" / "model.pt", weights_only=True))
        with torch.no_grad():
            agree = float((parent.eval()(data.x_test).argmax(1) == logits.argmax(1)).float().mean())
        assert agree >= 0.95
    # Each seed calibrates on its own sample of the training split, the same one every time.
    a, b = calibration_indices(256, 100, 0), calibration_indices(256, 100, 1)
    assert len(a) == 100 and len(set(a)) == 100 and not np.array_equal(a, b)
    assert np.array_equal(a, calibration_indices(256, 100, 0))
    assert len(calibration_indices(50, 100, 0)) == 50
    result = pie_audit.compare(baseline, out)
    assert result.test == "paired"


def test_lottery_rewinds_batchnorm_statistics_with_the_weights(monkeypatch):
    data = replace(tiny_digits(), x_train=tiny_digits().x_train[:64], y_train=tiny_digits().y_train[:64])
    config = replace(TINY_CONFIG, epochs=1)  # 2 steps; rewind = 0.5 keeps the state after 1
    seen, starts = [], []
    real = lottery_module.train_models

    def spy(dataset, *, seeds, start=init_model, on_step=None, **kw):
        def watched_step(step, state, masks):
            if on_step is not None:
                on_step(step, state, masks)
            if step == 0:
                seen.append({n: t.detach().clone() for n, t in state.items()})

        def watched_start(arch, dataset, seed):
            model = start(arch, dataset, seed)
            starts.append(model.state_dict())
            return model

        return real(dataset, seeds=seeds, start=watched_start, on_step=watched_step, **kw)

    monkeypatch.setattr(lottery_module, "train_models", spy)
    LotteryTicket(sparsity=0.5, rounds=1, rewind=0.5).train(data, arch="resnet18-cifar", seeds=[0], config=config)
    rewound, retrained = seen[0], starts[1]
    for name in ("bn1.running_mean", "bn1.running_var", "layer1.0.bn2.running_var", "bn1.num_batches_tracked"):
        assert torch.equal(retrained[name], rewound[name][0]), name
    # Not the initial statistics: one step of training moved them.
    assert not torch.equal(retrained["bn1.running_mean"], starts[0]["bn1.running_mean"])
    assert int(retrained["bn1.num_batches_tracked"]) == 1


def test_one_table_lists_the_methods_and_the_study_reads_it():
    from pie_audit.study import _study
    from pie_audit.training.methods import DERIVED, NO_SPARSITY
    from pie_audit.training.methods._registry import _CLASSES

    assert METHODS == ("gmp", "random", "oneshot", "lottery", "structured", "int8", "onnx-int8")
    assert tuple(_CLASSES) == METHODS
    assert DERIVED == ("oneshot", "int8", "onnx-int8") and NO_SPARSITY == ("int8", "onnx-int8")
    assert (_study.METHODS, _study.DERIVED, _study.NO_SPARSITY) == (METHODS, DERIVED, NO_SPARSITY)
    assert _study.METHODS is METHODS
