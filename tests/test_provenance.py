"""Provenance summaries of a population's run.json records."""

from pie_audit.interchange._provenance import population_provenance


def test_shared_values_once_differing_values_each_once():
    runs = [
        {"seed": 2, "arch": "small-cnn", "config": {"lr": 0.1}, "sparsity": {"target": 0.9, "achieved": 0.89},
         "command": ["pie-audit", "train"], "finished_at": "2026-01-02T00:00:00"},
        {"seed": 0, "arch": "small-cnn", "config": {"lr": 0.2}, "sparsity": {"target": 0.9, "achieved": 0.91},
         "command": ["pie-audit", "train"], "finished_at": "2026-01-01T00:00:00"},
        None,
    ]
    p = population_provenance(runs)
    assert (p.n_models, p.n_records, p.seeds) == (3, 2, (0, 2))
    assert p.sparsity_target == 0.9
    assert p.sparsity_achieved == 0.9
    assert p.finished == ("2026-01-01T00:00:00", "2026-01-02T00:00:00")
    fields = dict(p.fields)
    assert fields["architecture"] == ("small-cnn",)
    assert fields["training config"] == ('{"lr": 0.1}', '{"lr": 0.2}')
    assert fields["command"] == ("pie-audit train",)
    assert fields["target sparsity"] == ("0.9",)


def test_disagreeing_or_missing_targets_give_none():
    assert population_provenance([{"sparsity": {"target": 0.5}}, {"sparsity": {"target": 0.9}}]).sparsity_target is None
    empty = population_provenance([None, None])
    assert (empty.n_records, empty.seeds, empty.sparsity_target, empty.sparsity_achieved, empty.fields) == (
        0, (), None, None, ()
    )
