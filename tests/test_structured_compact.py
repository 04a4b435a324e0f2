"""Structured pruning removes channels: residual coupling, compaction, reload and cost.

``pie_audit/training/_compact.py`` with the policy of ``_pruning.py`` and the ``structured``
method: coupled conv layers are masked together, the finished model is compacted with
Torch-Pruning, saved as a weights-only state dict and rebuilt from its ``run.json`` record.
"""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import pie_audit
import pie_audit.cli._predict  # noqa: F401 - registers the command until cli/__init__ imports it
from pie_audit.data._datasets import load_dataset
from pie_audit.errors import ConfigError, FormatError
from pie_audit.interchange import MODEL_FILE, PREDICTIONS_FILE, RUN_FILE
from pie_audit.prediction._loading import STATE_DICT_MISMATCH, load_model_file
from pie_audit.training import compact_architecture, load_compact
from pie_audit.training._compact import (
    BAD_STRUCTURE,
    COMPACT_CHANGED,
    STRUCTURE_MISMATCH,
    compact_model,
    conv_groups,
    library_version,
    structure_record,
)
from pie_audit.training._cost import saved_model_cost
from pie_audit.training._models import build_model
from pie_audit.training._pruning import filter_masks
from pie_audit.training.methods import PARENT_NOT_DENSE, StructuredPruning
from pie_audit.training.methods._parent import PARENT_COMPACT, load_parent

from cli_run import error_line, run

RESNET_GROUPS = [
    ("conv1", "layer1.0.conv2", "layer1.1.conv2"),
    ("layer1.0.conv1",),
    ("layer1.1.conv1",),
    ("layer2.0.conv1",),
    ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"),
    ("layer2.1.conv1",),
    ("layer3.0.conv1",),
    ("layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv2"),
    ("layer3.1.conv1",),
    ("layer4.0.conv1",),
    ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"),
    ("layer4.1.conv1",),
]


def small_cnn_by_hand(w1: int, w2: int, *, channels: int = 1, side: int = 8, classes: int = 10) -> tuple[int, int]:
    """Parameters and FLOPs of small-cnn with ``w1`` and ``w2`` conv channels (as tests/test_cost.py).

    conv 3x3 (C -> w1) on side^2, pool, conv 3x3 (w1 -> w2) on (side/2)^2, pool, linear
    (w2 (side/4)^2 -> 128), linear (128 -> classes); a multiply-add is 2 FLOPs.
    """
    flat = w2 * (side // 4) ** 2
    parameters = (w1 * channels * 9 + w1) + (w2 * w1 * 9 + w2) + (flat * 128 + 128) + (128 * classes + classes)
    flops = 2 * w1 * side * side * channels * 9 + 2 * w2 * (side // 2) ** 2 * w1 * 9 + 2 * flat * 128 + 2 * 128 * classes
    return parameters, flops


def resnet18_parameters(width: int, *, channels: int = 3, classes: int = 10) -> int:
    """Parameters of resnet18-cifar whose stages are ``width``, 2, 4 and 8 times ``width`` wide.

    Stem 3x3 conv (no bias) and BatchNorm; per stage two basic blocks of two 3x3 convs and two
    BatchNorms, the first block of stages 2-4 with a 1x1 downsampling conv and its BatchNorm;
    linear (8 width -> classes).
    """
    total = channels * width * 9 + 2 * width
    previous = width
    for stage in range(4):
        c = width * 2**stage
        convs = previous * c * 9 + 3 * c * c * 9
        norms = 4 * 2 * c
        if stage:
            convs += previous * c
            norms += 2 * c
        total += convs + norms
        previous = c
    return total + 8 * width * classes + classes


def test_the_hand_counts_are_the_dense_models():
    assert small_cnn_by_hand(32, 64) == (53_002, 694_784)
    dense = build_model("resnet18-cifar", in_channels=3, image_size=32, num_classes=10)
    assert resnet18_parameters(64) == sum(p.numel() for p in dense.parameters()) == 11_173_962


# ---- which conv layers are coupled --------------------------------------------------------------


def test_conv_groups_couple_the_residual_streams_and_nothing_in_small_cnn():
    small = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    assert conv_groups(small, (1, 8, 8)) == [("features.0",), ("features.3",)]
    resnet = build_model("resnet18-cifar", in_channels=3, image_size=32, num_classes=10)
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    assert conv_groups(resnet, (3, 32, 32)) == RESNET_GROUPS
    # Traced on a copy: not even a BatchNorm statistic of the model moved.
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())


def test_a_group_is_ranked_by_the_norm_of_its_filters_together():
    # One model, two coupled convs of three filters: norms a (3, 0, 1), b (4, 2, 0), together
    # sqrt(9 + 16) = 5, sqrt(0 + 4) = 2 and sqrt(1 + 0) = 1.
    a = torch.tensor([[3.0, 0.0], [0.0, 0.0], [1.0, 0.0]]).view(1, 3, 2, 1, 1)
    b = torch.tensor([[0.0, 4.0], [2.0, 0.0], [0.0, 0.0]]).view(1, 3, 2, 1, 1)
    alone = filter_masks({"a": a, "b": b}, 1 / 3, batch_dims=1)
    assert alone["a"].tolist() == [[True, False, True]] and alone["b"].tolist() == [[True, True, False]]
    together = filter_masks({"a": a, "b": b}, 1 / 3, batch_dims=1, groups=[("a", "b")])
    assert together["a"].tolist() == together["b"].tolist() == [[True, True, False]]
    # A channel removed from the group stays removed, though its norm is now the largest.
    previous = {"a": torch.tensor([[False, True, True]]), "b": torch.tensor([[False, True, True]])}
    grown = filter_masks({"a": a, "b": b}, 2 / 3, batch_dims=1, groups=[("a", "b")], previous=previous)
    assert grown["a"].tolist() == grown["b"].tolist() == [[False, True, False]]


def test_small_cnn_masks_are_the_per_layer_masks_of_before():
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10)
    policy = StructuredPruning(sparsity=0.5, begin=0.0, end=0.0).policy(model, total_steps=10)
    assert policy.groups == (("features.0.weight",), ("features.3.weight",))
    assert "coupled" not in policy.to_dict()
    params = dict(model.named_parameters())
    weights = {n: torch.stack([params[n], -2 * params[n].flip(0)]) for n in policy.names}  # (K=2, ...)
    masks = policy(0, weights, None)
    per_layer = filter_masks(weights, 0.5, batch_dims=1)  # each layer ranked alone, as before groups
    for name in policy.names:
        assert torch.equal(masks[name].flatten(start_dim=2).any(dim=-1), per_layer[name])


def test_a_resnet_is_masked_group_by_group_and_an_excluded_conv_keeps_its_group_whole():
    model = build_model("resnet18-cifar", in_channels=3, image_size=32, num_classes=10)
    policy = StructuredPruning(sparsity=0.5, begin=0.0, end=0.0).policy(model, total_steps=10)
    assert policy.groups == tuple(tuple(f"{m}.weight" for m in g) for g in RESNET_GROUPS)
    assert policy.to_dict()["coupled"] == [[f"{m}.weight" for m in g] for g in RESNET_GROUPS if len(g) > 1]
    params = dict(model.named_parameters())
    masks = policy(0, {n: params[n].unsqueeze(0) for n in policy.names}, None)
    kept = {n: masks[n][0].flatten(start_dim=1).any(dim=1) for n in policy.names}
    for group in policy.groups:
        assert all(torch.equal(kept[n], kept[group[0]]) for n in group)  # the same channels
        assert int((~kept[group[0]]).sum()) == params[group[0]].shape[0] // 2

    excluded = StructuredPruning(sparsity=0.5, begin=0.0, end=0.0, exclude=("layer1.0.conv2",)).policy(model, total_steps=10)
    stream = {"conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight"}
    assert not stream & set(excluded.names)
    assert "layer1.0.conv1.weight" in excluded.names and len(excluded.names) == 20 - 3


# ---- compaction: the same predictions from a smaller network ----------------------------------


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Statistics and affine parameters away from their defaults, so that a wrong channel shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=generator) - 0.5)


def _masked(arch: str, shape: tuple[int, int, int], sparsity: float) -> nn.Module:
    """``arch`` with structured pruning's final masks applied (no training), in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, in_channels=shape[0], image_size=shape[1], num_classes=10)
    _randomise_batchnorm(model, torch.Generator().manual_seed(1))
    policy = StructuredPruning(sparsity=sparsity, begin=0.0, end=0.0).policy(model, total_steps=10)
    params = dict(model.named_parameters())
    masks = policy(0, {n: params[n].unsqueeze(0) for n in policy.names}, None)
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask[0])
    return model.eval()


def _same_predictions(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        la, lb = a(x), b(x)
    torch.testing.assert_close(lb, la, rtol=0, atol=1e-5)
    assert torch.equal(la.argmax(1), lb.argmax(1))


def test_small_cnn_compacts_to_half_its_channels_with_the_same_predictions():
    masked = _masked("small-cnn", (1, 8, 8), 0.5)
    compact = compact_model(_masked("small-cnn", (1, 8, 8), 0.5), (1, 8, 8))
    _same_predictions(masked, compact, torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    assert (compact.features[0].out_channels, compact.features[3].in_channels, compact.features[3].out_channels) == (16, 16, 32)
    assert compact.classifier[1].in_features == 32 * 2 * 2
    assert sum(p.numel() for p in compact.parameters()) == small_cnn_by_hand(16, 32)[0] == 22_602
    assert structure_record(compact) == {
        "compact": True, "library": library_version(), "channels": {"features.0": 16, "features.3": 32}
    }
    assert library_version() == "torch-pruning " + __import__("importlib.metadata").metadata.version("torch-pruning")


def test_resnet_compacts_its_residual_streams_with_the_same_predictions():
    masked = _masked("resnet18-cifar", (3, 32, 32), 0.5)
    compact = compact_model(_masked("resnet18-cifar", (3, 32, 32), 0.5), (3, 32, 32))
    _same_predictions(masked, compact, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    # The residual stream lost its channels in every layer that writes to it or reads it.
    assert compact.conv1.out_channels == compact.layer1[0].conv2.out_channels == compact.layer1[1].conv2.out_channels == 32
    assert compact.bn1.num_features == compact.layer1[0].conv1.in_channels == 32
    stage2 = compact.layer2[0]
    assert stage2.downsample[0].out_channels == stage2.conv2.out_channels == compact.layer2[1].conv2.out_channels == 64
    assert stage2.downsample[0].in_channels == stage2.conv1.in_channels == 32
    assert compact.layer4[1].conv2.out_channels == compact.fc.in_features == 256
    assert sum(p.numel() for p in compact.parameters()) == resnet18_parameters(32) == 2_797_610


def test_a_group_with_every_channel_removed_keeps_one():
    model = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10).eval()
    with torch.no_grad():
        model.features[0].weight.zero_()
        model.features[0].bias.zero_()
    reference = [p.clone() for p in model.classifier.parameters()]
    compact = compact_model(model, (1, 8, 8))
    assert compact.features[0].out_channels == 1 and compact.features[3].in_channels == 1
    assert compact.features[3].out_channels == 64 and all(torch.equal(a, b) for a, b in zip(reference, compact.classifier.parameters()))


def test_a_compaction_that_would_change_the_outputs_is_refused_as_a_bug():
    # A sigmoid turns the zeroed channel into 0.5, which the next conv reads: not removable.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Sigmoid(), nn.Conv2d(4, 2, 3, padding=1),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()  # fmt: skip
    with torch.no_grad():
        model[0].weight[0] = 0
        model[0].bias[0] = 0
    with pytest.raises(RuntimeError) as e:
        compact_model(model, (1, 4, 4), arch="sigmoid-net")
    assert str(e.value).startswith(COMPACT_CHANGED.split("{error")[0].format(arch="sigmoid-net"))


# ---- rebuilding from the record: the architecture's code and the channel counts ----------------


def test_compact_architecture_rebuilds_the_shapes_and_refuses_what_does_not_fit():
    compact = compact_model(_masked("resnet18-cifar", (3, 32, 32), 0.5), (3, 32, 32))
    channels = structure_record(compact)["channels"]
    rebuilt = compact_architecture("resnet18-cifar", in_channels=3, image_size=32, num_classes=10, channels=channels)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in compact.state_dict().items()}
    loaded = load_compact(compact.state_dict(), arch="resnet18-cifar", in_channels=3, image_size=32, num_classes=10,
                          channels=channels, path="m.pt", run="run.json").eval()  # fmt: skip
    _same_predictions(compact, loaded, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))

    uncoupled = channels | {"layer1.0.conv2": 31}
    with pytest.raises(ConfigError) as e:
        compact_architecture("resnet18-cifar", in_channels=3, image_size=32, num_classes=10, channels=uncoupled)
    assert str(e.value) == (
        "coupled conv layers must keep as many channels as each other, not conv1 32, layer1.0.conv2 31, layer1.1.conv2 32"
    )
    with pytest.raises(FormatError) as e:
        load_compact(compact.state_dict(), arch="resnet18-cifar", in_channels=3, image_size=32, num_classes=10,
                     channels=channels | {"fc": 3}, path="m.pt", run="run.json")  # fmt: skip
    assert str(e.value) == BAD_STRUCTURE.format(path="run.json", key="structure", arch="resnet18-cifar",
                                                reason="resnet18-cifar has no conv layer 'fc'")  # fmt: skip
    small = {"features.0": 16, "features.3": 32}
    dense_state = build_model("small-cnn", in_channels=1, image_size=8, num_classes=10).state_dict()
    with pytest.raises(FormatError) as e:
        load_compact(dense_state, arch="small-cnn", in_channels=1, image_size=8, num_classes=10, channels=small,
                     path="m.pt", run="run.json")  # fmt: skip
    reason = ("features.0.weight has shape (32, 1, 3, 3), the architecture (16, 1, 3, 3); "
              "features.0.bias has shape (32,), the architecture (16,); and 3 more shapes differ")  # fmt: skip
    assert str(e.value) == STRUCTURE_MISMATCH.format(path="m.pt", arch="small-cnn", run="run.json", reason=reason)


@pytest.mark.parametrize("sparsity,widths", [(0.5, (16, 32)), (0.9, (3, 6))])
def test_cost_counts_the_compact_network(sparsity, widths):
    # round(0.5 * 32) = 16 and round(0.5 * 64) = 32 channels go; round(0.9 * 32) = 29 and
    # round(0.9 * 64) = 58 go, leaving 3 and 6.
    compact = compact_model(_masked("small-cnn", (1, 8, 8), sparsity), (1, 8, 8))
    assert structure_record(compact)["channels"] == {"features.0": widths[0], "features.3": widths[1]}
    parameters, flops = small_cnn_by_hand(*widths)
    assert (parameters, flops) == {(16, 32): (22_602, 201_216), (3, 6): (4_688, 17_344)}[widths]
    for channels in (None, structure_record(compact)["channels"]):  # told, or read off the shapes
        cost = saved_model_cost(compact.state_dict(), arch="small-cnn", image_shape=(1, 8, 8), num_classes=10,
                                channels=channels)  # fmt: skip
        assert cost["parameters"]["stored"] == parameters and cost["flops"] == flops and cost["note"] is None
    dense = saved_model_cost(build_model("small-cnn", in_channels=1, image_size=8, num_classes=10).state_dict(),
                             arch="small-cnn", image_shape=(1, 8, 8), num_classes=10)  # fmt: skip
    assert (dense["parameters"]["stored"], dense["flops"]) == (53_002, 694_784)


# ---- pie-audit train --method structured, then predict and compare ----------------------------


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    """A digits population of two structured-50 small-cnns from ``pie-audit train``."""
    out = tmp_path_factory.mktemp("structured") / "structured-50"
    assert run("train", "--dataset", "digits", "--method", "structured", "--sparsity", 0.5, "--population", 2,
               "--epochs", 2, "--out", out, "--quiet") == 0  # fmt: skip
    return out


@pytest.mark.slow
def test_train_saves_the_compact_model_and_records_its_structure_and_cost(structured):
    for model_dir in sorted(structured.glob("seed-*")):
        run_json = json.loads((model_dir / RUN_FILE).read_text())
        assert run_json["structure"] == {
            "compact": True, "library": library_version(), "channels": {"features.0": 16, "features.3": 32}
        }
        # The sparsity is what was removed, against the dense architecture's conv layers.
        assert run_json["sparsity"]["channels"]["achieved"] == 0.5 and run_json["sparsity"]["achieved"] == 0.5
        assert run_json["sparsity"]["n_weights"] == 288 + 18_432
        cost = run_json["cost"]
        assert (cost["parameters"]["stored"], cost["flops"]) == (22_602, 201_216)
        assert cost["file_bytes"] == (model_dir / MODEL_FILE).stat().st_size
        state = torch.load(model_dir / MODEL_FILE, weights_only=True)
        assert state["features.0.weight"].shape == (16, 1, 3, 3) and state["classifier.1.weight"].shape == (128, 128)
        assert sum(t.numel() for t in state.values()) == 22_602


@pytest.mark.slow
def test_the_saved_model_reloads_weights_only_and_predicts_what_training_did(structured):
    dataset = load_dataset("digits")
    for model_dir in sorted(structured.glob("seed-*")):
        loaded = load_model_file(model_dir / MODEL_FILE, dataset=dataset)
        assert loaded.arch == "small-cnn" and loaded.module.features[3].out_channels == 32
        with torch.no_grad():
            probabilities = torch.softmax(loaded.module.eval()(dataset.x_test), dim=1).numpy()
        saved = pq.read_table(model_dir / PREDICTIONS_FILE).to_pandas()
        np.testing.assert_allclose(probabilities, saved.filter(like="prob_").to_numpy(), atol=1e-5)
        np.testing.assert_array_equal(probabilities.argmax(1), saved["prediction"].to_numpy())


@pytest.mark.slow
def test_predict_of_the_structured_population_compares_equal(structured, tmp_path, capsys):
    files = sorted(structured.glob("seed-*/model.pt"))
    assert run("predict", *files, "--dataset", "digits", "--out", tmp_path / "again", "--quiet") == 0
    for file in files:
        ours = pq.read_table(tmp_path / "again" / file.parent.name / PREDICTIONS_FILE).to_pandas()
        theirs = pq.read_table(file.parent / PREDICTIONS_FILE).to_pandas()
        np.testing.assert_array_equal(ours["prediction"], theirs["prediction"])
        record = json.loads((tmp_path / "again" / file.parent.name / RUN_FILE).read_text())
        assert record["n_parameters"] == 22_602
    result = pie_audit.compare(structured, tmp_path / "again", n_bootstrap=50)
    assert result.pruned.n_models == 2 and result.pies.fraction == 0.0


@pytest.mark.slow
def test_a_record_that_does_not_fit_the_weights_is_refused_by_name(structured, tmp_path, capsys):
    model_dir = tmp_path / "seed-0000"
    shutil.copytree(structured / "seed-0000", model_dir)
    record = json.loads((model_dir / RUN_FILE).read_text())
    (model_dir / RUN_FILE).write_text(json.dumps(record | {"structure": record["structure"] | {"channels": {"features.0": 15, "features.3": 32}}}))
    assert run("predict", model_dir / MODEL_FILE, "--dataset", "digits", "--out", tmp_path / "y") == 2
    reason = ("features.0.weight has shape (16, 1, 3, 3), the architecture (15, 1, 3, 3); "
              "features.0.bias has shape (16,), the architecture (15,); and 1 more shapes differ")  # fmt: skip
    assert error_line(capsys) == STRUCTURE_MISMATCH.format(path=model_dir / MODEL_FILE, arch="small-cnn",
                                                           run=model_dir / RUN_FILE, reason=reason)  # fmt: skip
    (model_dir / RUN_FILE).write_text(json.dumps(record | {"structure": {"compact": True, "channels": {"features.0": 0}}}))
    assert run("predict", model_dir / MODEL_FILE, "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys) == BAD_STRUCTURE.format(path=model_dir / RUN_FILE, key="structure", arch="small-cnn",
                                                      reason="channels of 'features.0' is 0, not a whole number >= 1")  # fmt: skip
    # Without its record the compact weights are not the dense architecture's.
    alone = tmp_path / "alone.pt"
    shutil.copy(model_dir / MODEL_FILE, alone)
    assert run("predict", alone, "--arch", "small-cnn", "--dataset", "digits", "--out", tmp_path / "y") == 2
    assert error_line(capsys).startswith(STATE_DICT_MISMATCH.format(path=alone, arch="small-cnn", dataset="digits", reason="")[:-2])
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_compact_model_is_no_parent(structured, tmp_path, capsys):
    assert run("train", "--dataset", "digits", "--method", "oneshot", "--sparsity", 0.5, "--from", structured,
               "--population", 1, "--epochs", 2, "--out", tmp_path / "oneshot", "--quiet") == 2  # fmt: skip
    assert error_line(capsys) == PARENT_NOT_DENSE.format(path=structured, method="structured", sparsity=0.5, derived="oneshot")
    with pytest.raises(FormatError) as e:
        load_parent(structured, 0, arch="small-cnn", dataset=load_dataset("digits"))
    model_dir = structured / "seed-0000"
    assert str(e.value) == PARENT_COMPACT.format(path=model_dir / MODEL_FILE, run=model_dir / RUN_FILE)
