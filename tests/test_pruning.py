"""Gradual magnitude pruning: the schedule, the masks, and that pruned weights stay zero."""

import numpy as np
import pytest
import torch
from torch import nn

from pie_audit.errors import ConfigError
from pie_audit.training._models import SmallCNN, resnet18_cifar
from pie_audit.training._pruning import (
    GradualMagnitudePruning,
    PruningSchedule,
    apply_masks_,
    magnitude_masks,
    prunable_weights,
    sparsity_report,
    zhu_gupta_sparsity,
)


class TestSchedule:
    def test_values_at_begin_midpoint_end(self):
        kw = dict(final=0.9, initial=0.0, begin_step=100, end_step=300)
        assert zhu_gupta_sparsity(100, **kw) == 0.0
        # (1 - 1/2)^3 = 1/8 of the way left: 0.9 - 0.9/8
        assert zhu_gupta_sparsity(200, **kw) == pytest.approx(0.9 * (1 - 0.125))
        assert zhu_gupta_sparsity(300, **kw) == pytest.approx(0.9)
        assert zhu_gupta_sparsity(10_000, **kw) == pytest.approx(0.9)
        assert zhu_gupta_sparsity(0, **kw) == 0.0

    def test_nonzero_initial(self):
        s = zhu_gupta_sparsity(150, final=0.8, initial=0.5, begin_step=100, end_step=200)
        assert s == pytest.approx(0.8 + (0.5 - 0.8) * 0.5**3)

    def test_monotone_non_decreasing(self):
        values = [zhu_gupta_sparsity(t, final=0.95, begin_step=10, end_step=90) for t in range(120)]
        assert np.all(np.diff(values) >= 0)
        assert values[0] == 0.0 and values[-1] == pytest.approx(0.95)

    def test_updates_every_k_steps_and_at_end(self):
        sched = PruningSchedule(final=0.5, begin_step=10, end_step=25, frequency=4)
        assert [t for t in range(40) if sched.updates_at(t)] == [10, 14, 18, 22, 25]

    def test_zero_sparsity_never_updates(self):
        sched = PruningSchedule(final=0.0, begin_step=0, end_step=10, frequency=1)
        assert not any(sched.updates_at(t) for t in range(20))

    @pytest.mark.parametrize("final", [-0.1, 1.0, 1.5])
    def test_impossible_sparsity(self, final):
        with pytest.raises(ConfigError, match="sparsity must be in"):
            PruningSchedule(final=final, begin_step=0, end_step=10, frequency=1)


class TestPrunableWeights:
    def test_small_cnn_skips_final_classifier_and_biases(self):
        names = prunable_weights(SmallCNN(1, 8, 10))
        assert names == ["features.0.weight", "features.3.weight", "classifier.1.weight"]

    def test_resnet_skips_fc_and_batchnorm(self):
        names = prunable_weights(resnet18_cifar(3, 32, 10))
        assert "fc.weight" not in names
        assert not any("bn" in n for n in names)
        assert "conv1.weight" in names and "layer1.0.conv1.weight" in names
        assert "layer2.0.downsample.0.weight" in names  # 1x1 conv shortcut is a conv
        assert len(names) == 20

    def test_exclude_by_name_and_regex_and_prune_final(self):
        model = SmallCNN(1, 8, 10)
        assert prunable_weights(model, exclude=["features.0"]) == [
            "features.3.weight",
            "classifier.1.weight",
        ]
        assert prunable_weights(model, exclude=[r"features\..*"]) == ["classifier.1.weight"]
        assert prunable_weights(model, prune_final=True)[-1] == "classifier.3.weight"

    def test_bad_regex(self):
        with pytest.raises(ConfigError, match="not a valid regular expression"):
            prunable_weights(SmallCNN(1, 8, 10), exclude=["("])


class TestMasks:
    def test_layerwise_exact_to_one_weight(self):
        g = torch.Generator().manual_seed(0)
        weights = {"a": torch.randn(7, 13, generator=g), "b": torch.randn(288, generator=g)}
        for s in (0.1, 0.5, 0.9, 0.99):
            masks = magnitude_masks(weights, s, scope="layer")
            for name, w in weights.items():
                assert int((~masks[name]).sum()) == round(s * w.numel())
                # The pruned weights are exactly the smallest in magnitude.
                kept, pruned = w[masks[name]].abs(), w[~masks[name]].abs()
                if len(pruned):
                    assert pruned.max() <= kept.min()

    def test_global_ranks_all_weights_together(self):
        weights = {"small": torch.full((10,), 0.01), "large": torch.arange(1.0, 11.0)}
        masks = magnitude_masks(weights, 0.5, scope="global")
        assert not masks["small"].any()  # all ten smallest weights live here
        assert masks["large"].all()

    def test_previous_masks_are_kept(self):
        w = {"w": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])}
        first = magnitude_masks(w, 1 / 3, previous=None)
        assert first["w"].tolist() == [True, True, True, True, False, False]
        # A pruned weight that has grown still ranks below every live weight.
        grown = {"w": torch.tensor([5.0, 4.0, 3.0, 2.0, 100.0, 0.5])}
        second = magnitude_masks(grown, 0.5, previous=first)
        assert second["w"].tolist() == [True, True, True, False, False, False]

    def test_leading_model_axis_masks_each_model_separately(self):
        g = torch.Generator().manual_seed(1)
        stacked = {"w": torch.randn(4, 6, 5, generator=g)}
        joint = magnitude_masks(stacked, 0.6, batch_dims=1)["w"]
        for k in range(4):
            alone = magnitude_masks({"w": stacked["w"][k]}, 0.6)["w"]
            assert torch.equal(joint[k], alone)

    def test_pruned_weights_stay_zero_through_optimizer_steps(self):
        torch.manual_seed(0)
        model = SmallCNN(1, 8, 10)
        params = dict(model.named_parameters())
        names = prunable_weights(model)
        masks = magnitude_masks({n: params[n] for n in names}, 0.8)
        apply_masks_(params, masks)
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
        x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            apply_masks_(params, masks)
            for n in names:
                assert torch.all(params[n][~masks[n]] == 0)
        report = sparsity_report(params, names)
        expected = sum(round(0.8 * params[n].numel()) for n in names)
        assert report["n_zero"] == expected
        assert report["achieved"] == pytest.approx(expected / report["n_weights"])


class TestGradualMagnitudePruning:
    def test_masks_only_when_the_schedule_updates_each_model_on_its_own(self):
        schedule = PruningSchedule(final=0.5, begin_step=2, end_step=6, frequency=2)
        policy = GradualMagnitudePruning(schedule, ("w",))
        stacked = {"w": torch.randn(3, 8, 10, generator=torch.Generator().manual_seed(0))}
        updates = {step: policy(step, stacked, None) for step in range(9)}
        assert [step for step, m in updates.items() if m is not None] == [2, 4, 6]
        final = updates[6]["w"]
        assert final.shape == (3, 8, 10)
        for k in range(3):
            alone = magnitude_masks({"w": stacked["w"][k]}, 0.5)["w"]
            assert torch.equal(final[k], alone)
        assert policy.target == 0.5 and policy.to_dict() == schedule.to_dict()

    def test_sparsity_zero_is_dense(self):
        schedule = PruningSchedule(final=0.0, begin_step=0, end_step=4, frequency=1)
        policy = GradualMagnitudePruning(schedule, ("w",))
        assert all(policy(step, {"w": torch.ones(2, 3)}, None) is None for step in range(6))
