"""The reading side of the interchange format: every bad input gets a precise FormatError."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pie_audit.errors import FormatError, OutputError
from pie_audit.interchange._agreement import (
    CLASS_MISMATCH,
    CLASS_OUT_OF_RANGE,
    DIFFERENT_EXAMPLES,
    LABEL_MISMATCH,
    MAX_UNNAMED_CLASSES,
    TOO_MANY_CLASSES,
    check_populations,
)
from pie_audit.interchange._population import (
    EMPTY_POPULATION,
    MISSING_PREDICTIONS,
    NO_DIRECTORY,
    NO_PREDICTIONS,
    NOT_A_DIRECTORY,
    Population,
    load_population,
)
from pie_audit.interchange._population import write_population as store_write_population
from pie_audit.interchange._predictions import (
    DUPLICATE_ID,
    INDEX_HINT,
    MISSING_COLUMN,
    MISSING_VALUES,
    NEGATIVE_VALUE,
    NO_ROWS,
    NOT_INTEGER,
    read_predictions,
)
from pie_audit.interchange._records import BAD_CLASSES, BAD_JSON
from synthetic import write_population

LABELS = np.array([0, 1, 2, 1, 0, 2])
PREDS = np.array([[0, 1, 2, 1, 0, 0], [0, 2, 2, 1, 1, 2], [1, 1, 2, 1, 0, 2]])


def _write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _good(**overrides):
    columns = {
        "example_id": pa.array([0, 1, 2], pa.int64()),
        "label": pa.array([0, 1, 1], pa.int64()),
        "prediction": pa.array([0, 1, 0], pa.int64()),
    }
    columns.update(overrides)
    return columns


def _raises(message, fn, *args):
    with pytest.raises(FormatError) as e:
        fn(*args)
    assert str(e.value) == message
    assert "\n" not in str(e.value)


# --- load_population ------------------------------------------------------------------------


def test_loads_and_aligns_shuffled_files(tmp_path):
    write_population(tmp_path / "pop", PREDS, LABELS, example_ids=np.arange(6) * 10, shuffle_seed=0)
    (tmp_path / "pop" / "population.json").write_text("{}")
    (tmp_path / "pop" / ".tmp-model-9").mkdir()
    population = load_population(tmp_path / "pop")
    assert population.models == ("model-000", "model-001", "model-002")
    np.testing.assert_array_equal(population.example_ids, np.arange(6) * 10)
    np.testing.assert_array_equal(population.labels, LABELS)
    np.testing.assert_array_equal(population.predictions, PREDS)
    assert population.runs == (None, None, None)
    assert population.classes is None
    assert (population.n_models, population.n_examples) == (3, 6)


def test_reads_run_json_and_classes(tmp_path):
    write_population(tmp_path / "pop", PREDS, LABELS, classes=["a", "b", "c"])
    population = load_population(tmp_path / "pop")
    assert population.classes == ("a", "b", "c")
    assert population.runs[1] == {"seed": 1, "classes": ["a", "b", "c"]}
    assert population.classes_source == tmp_path / "pop" / "model-000" / "run.json"


def test_accepts_narrow_integer_types(tmp_path):
    path = _write(
        tmp_path / "p.parquet",
        **_good(label=pa.array([0, 1, 1], pa.uint8()), prediction=pa.array([0, 1, 0], pa.int16())),
    )
    ids, labels, predictions = read_predictions(path)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1]


def test_missing_directory(tmp_path):
    _raises(NO_DIRECTORY.format(path=tmp_path / "nope"), load_population, tmp_path / "nope")


def test_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    _raises(NOT_A_DIRECTORY.format(path=tmp_path / "file"), load_population, tmp_path / "file")


def test_empty_directory(tmp_path):
    (tmp_path / "pop").mkdir()
    (tmp_path / "pop" / "population.json").write_text("{}")
    _raises(
        EMPTY_POPULATION.format(path=tmp_path / "pop", file="predictions.parquet", found="found only population.json"),
        load_population,
        tmp_path / "pop",
    )
    (tmp_path / "empty").mkdir()
    _raises(
        EMPTY_POPULATION.format(path=tmp_path / "empty", file="predictions.parquet", found="it is empty"),
        load_population,
        tmp_path / "empty",
    )


def test_no_prediction_files(tmp_path):
    (tmp_path / "pop" / "seed-0").mkdir(parents=True)
    (tmp_path / "pop" / "seed-0" / "run.json").write_text("{}")
    _raises(
        NO_PREDICTIONS.format(path=tmp_path / "pop", file="predictions.parquet"),
        load_population,
        tmp_path / "pop",
    )


def test_one_model_without_predictions(tmp_path):
    write_population(tmp_path / "pop", PREDS, LABELS)
    (tmp_path / "pop" / "model-005").mkdir()
    _raises(
        MISSING_PREDICTIONS.format(path=tmp_path / "pop" / "model-005", file="predictions.parquet"),
        load_population,
        tmp_path / "pop",
    )


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "pop" / "m" / "predictions.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(FormatError) as e:
        load_population(tmp_path / "pop")
    assert str(e.value).startswith(f"{path}: not a readable Parquet file (")
    assert "\n" not in str(e.value)


def test_truncated_parquet(tmp_path):
    path = _write(tmp_path / "p.parquet", **_good())
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(FormatError) as e:
        read_predictions(path)
    assert str(e.value).startswith(f"{path}: not a readable Parquet file (")


@pytest.mark.parametrize("column", ["example_id", "label", "prediction"])
def test_missing_column(tmp_path, column):
    columns = _good()
    del columns[column]
    path = _write(tmp_path / "p.parquet", **columns)
    _raises(MISSING_COLUMN.format(path=path, column=column, hint=""), read_predictions, path)


@pytest.mark.parametrize(
    ("column", "array", "kind"),
    [
        ("label", pa.array([0.0, 1.0, 1.5]), "double"),
        ("prediction", pa.array(["0", "1", "0"]), "string"),
        ("example_id", pa.array([0.0, 1.0, 2.0], pa.float32()), "float"),
    ],
)
def test_non_integer_column(tmp_path, column, array, kind):
    path = _write(tmp_path / "p.parquet", **_good(**{column: array}))
    _raises(NOT_INTEGER.format(path=path, column=column, type=kind), read_predictions, path)


@pytest.mark.parametrize("column", ["label", "prediction"])
def test_negative_value(tmp_path, column):
    path = _write(tmp_path / "p.parquet", **_good(**{column: pa.array([0, -3, 1], pa.int64())}))
    _raises(NEGATIVE_VALUE.format(path=path, column=column, value=-3), read_predictions, path)


def test_missing_values(tmp_path):
    path = _write(tmp_path / "p.parquet", **_good(label=pa.array([0, None, 1], pa.int64())))
    _raises(MISSING_VALUES.format(path=path, column="label", count=1), read_predictions, path)


def test_no_rows(tmp_path):
    empty = pa.array([], pa.int64())
    path = _write(tmp_path / "p.parquet", example_id=empty, label=empty, prediction=empty)
    _raises(NO_ROWS.format(path=path), read_predictions, path)


def test_duplicate_example_ids(tmp_path):
    path = _write(tmp_path / "p.parquet", **_good(example_id=pa.array([5, 2, 5], pa.int64())))
    _raises(DUPLICATE_ID.format(path=path, value=5), read_predictions, path)


def test_models_evaluated_on_different_examples(tmp_path):
    write_population(tmp_path / "pop", PREDS[:2], LABELS)
    write_population(tmp_path / "other", PREDS[:1], LABELS, example_ids=np.arange(6) + 1, prefix="z-")
    (tmp_path / "other" / "z-000").rename(tmp_path / "pop" / "z-000")
    ref = tmp_path / "pop" / "model-000" / "predictions.parquet"
    _raises(
        DIFFERENT_EXAMPLES.format(
            path=tmp_path / "pop" / "z-000" / "predictions.parquet",
            reference=ref,
            detail="6 examples here, 6 there; example_id 6 only here; example_id 0 only there",
        ),
        load_population,
        tmp_path / "pop",
    )


def test_labels_disagree_between_models(tmp_path):
    write_population(tmp_path / "pop", PREDS[:2], LABELS)
    other = LABELS.copy()
    other[3] = 2
    write_population(tmp_path / "other", PREDS[:1], other, prefix="z-")
    (tmp_path / "other" / "z-000").rename(tmp_path / "pop" / "z-000")
    _raises(
        LABEL_MISMATCH.format(
            path=tmp_path / "pop" / "z-000" / "predictions.parquet",
            example_id=3,
            label=2,
            other=1,
            reference=tmp_path / "pop" / "model-000" / "predictions.parquet",
        ),
        load_population,
        tmp_path / "pop",
    )


def test_class_lists_disagree_within_a_population(tmp_path):
    write_population(tmp_path / "pop", PREDS, LABELS, classes=["a", "b", "c"])
    run = tmp_path / "pop" / "model-002" / "run.json"
    run.write_text(json.dumps({"classes": ["a", "B", "c"]}))
    _raises(
        CLASS_MISMATCH.format(
            path=run,
            reference=tmp_path / "pop" / "model-000" / "run.json",
            detail="class 1 is 'B' here, 'b' there",
        ),
        load_population,
        tmp_path / "pop",
    )


def test_bad_run_json(tmp_path):
    write_population(tmp_path / "pop", PREDS, LABELS)
    run = tmp_path / "pop" / "model-001" / "run.json"
    run.write_text("{not json")
    with pytest.raises(FormatError) as e:
        load_population(tmp_path / "pop")
    assert str(e.value).startswith(BAD_JSON.format(path=run, reason="")[:-1])
    run.write_text(json.dumps({"classes": "abc"}))
    _raises(BAD_CLASSES.format(path=run), load_population, tmp_path / "pop")


# --- check_populations ----------------------------------------------------------------------


def test_class_names_default_to_label_strings(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS))
    pruned = load_population(write_population(tmp_path / "p", PREDS[:, :] * 0 + 3, LABELS))
    assert check_populations(base, pruned) == ("0", "1", "2", "3")


def test_class_names_from_either_population(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS))
    pruned = load_population(write_population(tmp_path / "p", PREDS, LABELS, classes=list("abcd")))
    assert check_populations(base, pruned) == ("a", "b", "c", "d")


def test_populations_on_different_examples(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS))
    pruned = load_population(write_population(tmp_path / "p", PREDS[:, :5], LABELS[:5]))
    _raises(
        DIFFERENT_EXAMPLES.format(
            path=tmp_path / "p" / "model-000" / "predictions.parquet",
            reference=tmp_path / "b" / "model-000" / "predictions.parquet",
            detail="5 examples here, 6 there; example_id 5 only there",
        ),
        check_populations,
        base,
        pruned,
    )


def test_populations_with_different_labels(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS))
    pruned = load_population(write_population(tmp_path / "p", PREDS, LABELS[::-1]))
    with pytest.raises(FormatError) as e:
        check_populations(base, pruned)
    assert "label of example_id 0 is 2, but 0 in" in str(e.value)


def test_populations_with_different_class_lists(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS, classes=list("abc")))
    pruned = load_population(write_population(tmp_path / "p", PREDS, LABELS, classes=list("abcd")))
    _raises(
        CLASS_MISMATCH.format(
            path=tmp_path / "p" / "model-000" / "run.json",
            reference=tmp_path / "b" / "model-000" / "run.json",
            detail="4 classes here, 3 there",
        ),
        check_populations,
        base,
        pruned,
    )


def test_prediction_outside_class_list(tmp_path):
    base = load_population(write_population(tmp_path / "b", PREDS, LABELS, classes=list("abc")))
    bad = PREDS.copy()
    bad[1, 4] = 7
    pruned = load_population(write_population(tmp_path / "p", bad, LABELS))
    _raises(
        CLASS_OUT_OF_RANGE.format(
            path=tmp_path / "p" / "model-001" / "predictions.parquet",
            column="prediction",
            value=7,
            reference=tmp_path / "b" / "model-000" / "run.json",
            n=3,
        ),
        check_populations,
        base,
        pruned,
    )


def test_a_model_with_more_or_fewer_rows_is_named(tmp_path):
    write_population(tmp_path / "pop", PREDS[:2], LABELS)
    write_population(tmp_path / "short", PREDS[:1, :4], LABELS[:4], prefix="z-")
    (tmp_path / "short" / "z-000").rename(tmp_path / "pop" / "z-000")
    _raises(
        DIFFERENT_EXAMPLES.format(
            path=tmp_path / "pop" / "z-000" / "predictions.parquet",
            reference=tmp_path / "pop" / "model-000" / "predictions.parquet",
            detail="4 examples here, 6 there; example_id 4 only there",
        ),
        load_population,
        tmp_path / "pop",
    )


def test_an_absurd_class_index_without_a_class_list_is_refused(tmp_path):
    preds = PREDS[:2].copy()
    preds[1, 3] = 10**12
    base = load_population(write_population(tmp_path / "b", PREDS[:2], LABELS))
    pruned = load_population(write_population(tmp_path / "p", preds, LABELS))
    _raises(
        TOO_MANY_CLASSES.format(
            path=tmp_path / "p" / "model-001" / "predictions.parquet",
            column="prediction",
            value=10**12,
            limit=MAX_UNNAMED_CLASSES,
        ),
        check_populations,
        base,
        pruned,
    )
    # Just below the bound is a (large) class count, not an error.
    preds[1, 3] = MAX_UNNAMED_CLASSES - 1
    pruned = load_population(write_population(tmp_path / "q", preds, LABELS))
    assert len(check_populations(base, pruned)) == MAX_UNNAMED_CLASSES


# --- friendlier layouts, in-memory populations, writing ---------------------------------------


def test_one_parquet_file_per_model_is_a_population(tmp_path):
    a = load_population(write_population(tmp_path / "dirs", PREDS, LABELS))
    flat = tmp_path / "flat"
    flat.mkdir()
    for model in sorted((tmp_path / "dirs").iterdir()):
        (model / "predictions.parquet").rename(flat / f"{model.name}.parquet")
    b = load_population(flat)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert b.models == ("model-000", "model-001", "model-002")
    assert b.reference_file == flat / "model-000.parquet"
    (flat / "odd").mkdir()
    (flat / "odd" / "predictions.parquet").write_bytes(b"")
    with pytest.raises(FormatError, match="use one layout"):
        load_population(flat)


def test_example_id_may_be_the_dataframe_index(tmp_path):
    frame = pd.DataFrame({"example_id": [4, 5, 6], "label": [0, 1, 1], "prediction": [0, 1, 0]})
    frame.set_index("example_id").to_parquet(tmp_path / "range.parquet")
    frame.set_index("example_id").iloc[[2, 0, 1]].to_parquet(tmp_path / "shuffled.parquet")
    for name in ("range.parquet", "shuffled.parquet"):
        ids, labels, preds = read_predictions(tmp_path / name)
        assert ids.tolist() == [4, 5, 6] and labels.tolist() == [0, 1, 1] and preds.tolist() == [0, 1, 0]
    for index, shown in (("id", "id"), (None, "(unnamed)")):
        frame.set_index("example_id").rename_axis(index).iloc[[1, 0, 2]].to_parquet(tmp_path / "wrong.parquet")
        _raises(
            MISSING_COLUMN.format(path=tmp_path / "wrong.parquet", column="example_id", hint=INDEX_HINT.format(index=shown)),
            read_predictions,
            tmp_path / "wrong.parquet",
        )


def test_classes_named_once_in_population_json(tmp_path):
    pop = write_population(tmp_path / "pop", PREDS, LABELS)
    (pop / "population.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    assert load_population(pop).classes == ("a", "b", "c")
    # A model's run.json must agree with it.
    (pop / "model-001" / "run.json").write_text(json.dumps({"classes": ["a", "b", "x"]}))
    _raises(
        CLASS_MISMATCH.format(
            path=pop / "model-001" / "run.json", reference=pop / "population.json", detail="class 2 is 'x' here, 'c' there"
        ),
        load_population,
        pop,
    )
    (pop / "population.json").write_text(json.dumps({"classes": "abc"}))
    _raises(BAD_CLASSES.format(path=pop / "population.json"), load_population, pop)


def test_from_arrays_equals_files(tmp_path):
    ids = np.array([10, 11, 12, 13, 14, 15])
    pop = write_population(tmp_path / "pop", PREDS, LABELS, example_ids=ids, classes=["a", "b", "c"])
    from_files = load_population(pop)
    order = np.array([3, 0, 5, 1, 4, 2])  # arrays in any example order
    in_memory = Population.from_arrays(
        [row[order] for row in PREDS], LABELS[order], example_ids=ids[order], classes=["a", "b", "c"], name="pop"
    )
    np.testing.assert_array_equal(in_memory.example_ids, from_files.example_ids)
    np.testing.assert_array_equal(in_memory.predictions, from_files.predictions)
    np.testing.assert_array_equal(in_memory.labels, from_files.labels)
    assert in_memory.classes == from_files.classes and in_memory.path is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"predictions": [[0, 1], [0, 1, 1]]}, "base model 0 predictions: 2 values, but there are 3 labels"),
        ({"predictions": np.zeros((2, 4), int)}, "base predictions: shape (2, 4); expected (models, 3)"),
        ({"predictions": [[0.5, 1, 1]]}, "base model 0 predictions: not an array of class indices"),
        ({"predictions": [[0, -1, 1]]}, "base predictions: column 'prediction' has negative value -1"),
        ({"example_ids": [1, 1, 2]}, "base example_ids: duplicate example_id 1"),
        ({"model_names": ["a", "a"]}, "base: model_names must be 2 distinct"),
        ({"predictions": np.zeros((0, 3), int)}, "base: no model"),
        ({"probabilities": np.ones((2, 3, 2))}, "base: the arg-max of the probabilities differs"),
    ],
)
def test_from_arrays_refuses_what_files_would(kwargs, message):
    args = {"predictions": [[0, 1, 1], [0, 1, 0]], "labels": [0, 1, 1], **kwargs}
    with pytest.raises(FormatError) as e:
        Population.from_arrays(args.pop("predictions"), args.pop("labels"), name="base", **args)
    assert str(e.value).startswith(message), str(e.value)


def test_write_population_round_trips(tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 6)).astype(np.float32)
    pop = Population.from_arrays(
        probs.argmax(axis=2), LABELS, example_ids=np.arange(6) * 2, classes=["a", "b", "c"],
        model_names=["int8", "fp32"], probabilities=probs, name="mine",
    )  # fmt: skip
    out = store_write_population(tmp_path / "mine", pop)
    back = load_population(out)
    assert back.models == ("fp32", "int8")  # read back in name order
    np.testing.assert_array_equal(back.predictions, pop.predictions[::-1])
    np.testing.assert_array_equal(back.example_ids, pop.example_ids)
    assert back.classes == ("a", "b", "c")
    frame = pd.read_parquet(out / "int8" / "predictions.parquet")
    np.testing.assert_allclose(frame[["prob_0", "prob_1", "prob_2"]].to_numpy(), probs[0])
    with pytest.raises(OutputError):
        store_write_population(out, pop)
