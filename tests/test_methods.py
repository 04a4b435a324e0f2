"""Compression methods: random masks, one-shot pruning of a parent, lottery tickets."""

import json
from dataclasses import replace

import pytest
import torch

from pie_audit import methods as methods_module
from pie_audit.errors import ConfigError, OutputError
from pie_audit.methods import (
    NEEDS_FROM,
    NEEDS_SPARSITY,
    OPTION_NOT_USED,
    PARENT_MISSING,
    PARENT_NOT_A_POPULATION,
    PARENT_NOT_DENSE,
    PARENT_OTHER,
    UNKNOWN_METHOD,
    LotteryTicket,
    OneShotPruning,
    RandomPruning,
    make_method,
)
from pie_audit.population import train_population
from pie_audit.pruning import magnitude_masks
from pie_audit.training import PruneConfig, init_model, train_models

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


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("magic", {}, UNKNOWN_METHOD.format(method="magic", choices="gmp, random, oneshot, lottery")),
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
        assert run["method_params"]["source"] == str(baseline)
        assert run["parent"] == {
            "seed": seed,
            "path": str((baseline / f"seed-{seed:04d}").resolve()),
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
    real = methods_module.train_models

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

    monkeypatch.setattr(methods_module, "train_models", spy)
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
