"""``run.json`` and ``population.json``: the records built, read back, and the finished-model check."""

import hashlib
import json

import pytest

from pie_audit.errors import FormatError
from pie_audit.interchange._records import (
    BAD_CLASSES,
    BAD_JSON,
    BAD_SPEC,
    MODEL_FILE,
    NOT_AN_OBJECT,
    POPULATION_FORMAT,
    PREDICTIONS_FILE,
    RUN_FILE,
    RUN_FORMAT,
    file_record,
    file_records,
    incomplete_reason,
    json_kind,
    population_record,
    read_json_object,
    read_population_classes,
    read_population_spec,
    read_run,
    run_record,
)


def _raises(message, fn, *args):
    with pytest.raises(FormatError) as e:
        fn(*args)
    assert str(e.value) == message
    assert "\n" not in str(e.value)
    return e.value


# ---- building records -----------------------------------------------------------------------


def test_run_record_puts_the_format_first_and_keeps_the_fields_in_order():
    record = run_record({"seed": 3, "arch": "small-cnn", "sparsity": {"target": 0.9}})
    assert record == {"format": "pie-audit/run/1", "seed": 3, "arch": "small-cnn", "sparsity": {"target": 0.9}}
    assert list(record) == ["format", "seed", "arch", "sparsity"]


def test_run_record_sets_the_format_whatever_the_fields_say():
    record = run_record({"format": "pie-audit/run/0", "seed": 1})
    assert record == {"format": RUN_FORMAT, "seed": 1}
    assert list(record) == ["format", "seed"]


def test_population_record_shapes():
    assert population_record() == {"format": "pie-audit/population/1"}
    spec = {"arch": "small-cnn", "seeds": [0, 1]}
    record = population_record(spec=spec, classes=("cat", "dog"))
    assert record == {"format": POPULATION_FORMAT, "classes": ["cat", "dog"], "spec": spec}
    assert list(record) == ["format", "classes", "spec"]
    record["spec"]["arch"] = "changed"
    assert spec["arch"] == "small-cnn"  # the record holds a copy


def test_records_round_trip_through_the_readers(tmp_path):
    run = tmp_path / RUN_FILE
    run.write_text(json.dumps(run_record({"seed": 2, "classes": ["a", "b"]})))
    assert read_run(run) == {"format": RUN_FORMAT, "seed": 2, "classes": ["a", "b"]}
    population = tmp_path / "population.json"
    population.write_text(json.dumps(population_record(spec={"epochs": 3}, classes=["a", "b"])))
    assert read_population_classes(population) == ("a", "b")
    assert read_population_spec(population) == {"epochs": 3}


def test_records_without_classes_or_spec(tmp_path):
    population = tmp_path / "population.json"
    population.write_text(json.dumps(population_record()))
    assert read_population_classes(population) is None
    assert read_population_spec(population) == {}


# ---- reading records: every failure is one line naming the file -------------------------------


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("[" * 10_000 + "]" * 10_000, "nested too deeply"),
        ('{"a": 1} trailing', "Extra data: line 1 column 10 (char 9)"),
    ],
    ids=["truncated", "nested-10000-deep", "trailing"],
)
def test_read_json_object_refuses_bad_json(tmp_path, text, reason):
    path = tmp_path / RUN_FILE
    path.write_text(text)
    error = _raises(BAD_JSON.format(path=path, reason=reason), read_json_object, path)
    assert not isinstance(error.__cause__, FormatError)


def test_read_json_object_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / RUN_FILE
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(FormatError) as e:
        read_json_object(path)
    assert str(e.value).startswith(f"{path}: not valid JSON ('utf-8' codec can't decode byte 0xff")


def test_read_json_object_names_a_missing_file(tmp_path):
    path = tmp_path / "nowhere" / RUN_FILE
    _raises(BAD_JSON.format(path=path, reason="No such file or directory"), read_json_object, path)


@pytest.mark.parametrize("value", [[1, 2], "run", 3, None])
def test_read_json_object_wants_an_object(tmp_path, value):
    path = tmp_path / RUN_FILE
    path.write_text(json.dumps(value))
    _raises(NOT_AN_OBJECT.format(path=path), read_json_object, path)


@pytest.mark.parametrize("classes", [[], "cat dog", ["cat", 1], {"0": "cat"}])
def test_read_run_and_population_classes_refuse_bad_classes(tmp_path, classes):
    path = tmp_path / RUN_FILE
    path.write_text(json.dumps({"classes": classes}))
    _raises(BAD_CLASSES.format(path=path), read_run, path)
    _raises(BAD_CLASSES.format(path=path), read_population_classes, path)


@pytest.mark.parametrize("spec, kind", [([1], "a list"), ("x", "a string"), (None, "null"), (True, "true or false"), (2.5, "a number")])
def test_read_population_spec_wants_an_object(tmp_path, spec, kind):
    path = tmp_path / "population.json"
    path.write_text(json.dumps({"spec": spec}))
    _raises(BAD_SPEC.format(path=path, kind=kind), read_population_spec, path)


def test_json_kind():
    kinds = [json_kind(v) for v in ({}, [], "s", True, False, None, 0, 1.5)]
    assert kinds == ["an object", "a list", "a string", "true or false", "true or false", "null", "a number", "a number"]


# ---- checksums and the finished-model check ----------------------------------------------------


def test_file_record_is_the_size_and_sha256_of_the_bytes(tmp_path):
    content = bytes(range(256)) * 5000  # over one read block of 1 MiB
    path = tmp_path / "blob"
    path.write_bytes(content)
    assert file_record(path) == {"bytes": 1_280_000, "sha256": hashlib.sha256(content).hexdigest()}
    (tmp_path / "empty").write_bytes(b"")
    assert file_record(tmp_path / "empty") == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def _finished(directory, seed=3):
    """A model directory as pie-audit writes it: its two files, then run.json listing them."""
    directory.mkdir()
    (directory / PREDICTIONS_FILE).write_bytes(b"predictions")
    (directory / MODEL_FILE).write_bytes(b"weights")
    record = run_record({"seed": seed, "files": file_records(directory)})
    (directory / RUN_FILE).write_text(json.dumps(record))
    return directory


def test_file_records_lists_both_files(tmp_path):
    directory = _finished(tmp_path / "m")
    assert file_records(directory) == {
        PREDICTIONS_FILE: {"bytes": 11, "sha256": hashlib.sha256(b"predictions").hexdigest()},
        MODEL_FILE: {"bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()},
    }


def test_a_finished_model_directory_is_complete(tmp_path):
    assert incomplete_reason(_finished(tmp_path / "m"), seed=3) is None


def _rewrite_run(directory, change):
    record = json.loads((directory / RUN_FILE).read_text())
    change(record)
    (directory / RUN_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: (d / RUN_FILE).unlink(), "no run.json"),
        (lambda d: (d / RUN_FILE).write_text("{"), "run.json is unreadable (Expecting property name"),
        (lambda d: (d / RUN_FILE).write_text("[" * 10_000 + "]" * 10_000), "run.json is unreadable (maximum recursion"),
        (lambda d: (d / RUN_FILE).write_bytes(b"\xff"), "run.json is unreadable ('utf-8' codec"),
        (lambda d: (d / RUN_FILE).write_text("[3]"), "run.json is not the record of seed 3"),
        (lambda d: _rewrite_run(d, lambda r: r.update(seed=4)), "run.json is not the record of seed 3"),
        (lambda d: _rewrite_run(d, lambda r: r.pop("seed")), "run.json is not the record of seed 3"),
        (
            lambda d: _rewrite_run(d, lambda r: r.pop("files")),
            "run.json does not list the sizes and checksums of predictions.parquet and model.pt",
        ),
        (
            lambda d: _rewrite_run(d, lambda r: r["files"].pop(MODEL_FILE)),
            "run.json does not list the sizes and checksums of predictions.parquet and model.pt",
        ),
        (
            lambda d: _rewrite_run(d, lambda r: r.update(files=[PREDICTIONS_FILE, MODEL_FILE])),
            "run.json does not list the sizes and checksums of predictions.parquet and model.pt",
        ),
        (lambda d: (d / MODEL_FILE).unlink(), "no model.pt"),
        (lambda d: (d / PREDICTIONS_FILE).unlink(), "no predictions.parquet"),
        (lambda d: (d / MODEL_FILE).write_bytes(b"weights, cut short"), "model.pt is not the size run.json records"),
        (lambda d: _rewrite_run(d, lambda r: r["files"].update({MODEL_FILE: 7})), "model.pt is not the size run.json records"),
        (lambda d: (d / MODEL_FILE).write_bytes(b"WEIGHTS"), "model.pt does not match the checksum run.json records"),
    ],
    ids=[
        "no-run", "truncated-run", "deep-run", "run-not-utf8", "run-not-object", "other-seed", "no-seed",
        "no-files", "one-file", "files-a-list", "no-model", "no-predictions", "model-size", "size-not-recorded",
        "model-checksum",
    ],
)  # fmt: skip
def test_incomplete_reason_names_the_first_problem(tmp_path, damage, reason):
    directory = _finished(tmp_path / "m")
    damage(directory)
    found = incomplete_reason(directory, seed=3)
    assert found is not None and found.startswith(reason), found
    assert "\n" not in found


def test_incomplete_reason_wants_a_real_directory(tmp_path):
    assert incomplete_reason(tmp_path / "missing", seed=0) == "not a directory"
    (tmp_path / "file").write_text("")
    assert incomplete_reason(tmp_path / "file", seed=0) == "not a directory"
    target = _finished(tmp_path / "m", seed=0)
    (tmp_path / "link").symlink_to(target)
    assert incomplete_reason(tmp_path / "link", seed=0) == "not a directory"
    assert incomplete_reason(target, seed=0) is None
