"""Fuzzing the readers of everything a user hands us: any input loads or raises our own error.

Parquet predictions, run.json and population.json, [tool.pie-audit] in a pyproject.toml, images
files. A reader that lets a ValueError, KeyError or MemoryError escape would reach the user as a
traceback (exit 3), not as a one-line message naming the file (exit 2).
"""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pie_audit.errors import PieAuditError
from pie_audit.audit._settings import SETTINGS, read_settings, resolve_settings
from pie_audit.interchange import load_population, read_predictions, read_run
from pie_audit.report._thumbnails import read_images

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def loads_or_refuses(fn, *args):
    try:
        return fn(*args)
    except PieAuditError as e:
        message = str(e)
        assert message and "\n" not in message, message
        return None


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"PAR1")
@example(data=b"PAR1" + b"\x00" * 20 + b"PAR1")
def test_predictions_from_random_bytes(tmp_path, data):
    path = tmp_path / "predictions.parquet"
    path.write_bytes(data)
    loads_or_refuses(read_predictions, path)


arrow_columns = st.dictionaries(
    st.sampled_from(["example_id", "label", "prediction", "prob_0", "other"]),
    st.sampled_from(["int64", "int8", "uint64", "float64", "string", "bool", "null_int"]),
    max_size=5,
)


@FUZZ
@given(columns=arrow_columns, n=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_predictions_from_random_tables(tmp_path, columns, n, seed):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, kind in columns.items():
        values = rng.integers(-3, 2**63 - 1 if kind in ("int64", "uint64") else 5, n)
        if kind == "string":
            arrays[name] = pa.array([str(v) for v in values])
        elif kind == "bool":
            arrays[name] = pa.array(values > 2)
        elif kind == "float64":
            arrays[name] = pa.array(values.astype(float))
        elif kind == "null_int":
            arrays[name] = pa.array([None if v % 2 else int(v) for v in values], pa.int64())
        elif kind == "uint64":
            arrays[name] = pa.array(np.abs(values).astype(np.uint64))
        else:
            arrays[name] = pa.array(values.astype(kind))
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.table(arrays) if arrays else pa.table({"x": pa.array([], pa.int64())}), path)
    loaded = loads_or_refuses(read_predictions, path)
    if loaded is not None:
        ids, labels, predictions = loaded
        assert (np.diff(ids) > 0).all() and labels.min() >= 0 and predictions.min() >= 0


@FUZZ
@given(value=json_values)
def test_run_json_from_random_json(tmp_path, value):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(value))
    run = loads_or_refuses(read_run, path)
    assert run is None or isinstance(run, dict)


@FUZZ
@given(data=st.binary(max_size=200))
def test_run_json_from_random_bytes(tmp_path, data):
    path = tmp_path / "run.json"
    path.write_bytes(data)
    loads_or_refuses(read_run, path)


@FUZZ
@given(value=json_values)
def test_population_json_from_random_json(tmp_path, value):
    population = tmp_path / "pop"
    (population / "m").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"example_id": pa.array([0, 1]), "label": pa.array([0, 1]), "prediction": pa.array([0, 0])}),
        population / "m" / "predictions.parquet",
    )
    (population / "population.json").write_text(json.dumps(value))
    loads_or_refuses(load_population, population)


toml_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\\n\r'), max_size=6),
    st.lists(st.integers(0, 3), max_size=3),
)


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value).replace("'", '"')


@FUZZ
@given(table=st.dictionaries(st.sampled_from([*(k.replace("_", "-") for k in SETTINGS), "confidence", "typo"]), toml_values, max_size=5))
def test_settings_from_random_tables(tmp_path, table):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.pie-audit]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items()))
    settings = loads_or_refuses(lambda: resolve_settings(config=path))
    if settings is not None:  # what was accepted is usable: finite, in range
        assert 0 < settings.alpha < 1 and 1 <= settings.n_bootstrap <= 100_000 and settings.seed >= 0


@FUZZ
@given(text=st.text(max_size=200))
@example(text="[tool]\npie-audit = 3\n")
@example(text="tool = 3\n")
def test_settings_from_random_text(tmp_path, text):
    path = tmp_path / "pyproject.toml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    loads_or_refuses(read_settings, path)


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"PK\x03\x04")
def test_images_from_random_bytes(tmp_path, data):
    path = tmp_path / "images.npz"
    path.write_bytes(data)
    loads_or_refuses(read_images, path)


@pytest.mark.parametrize("shape", [(0,), (2, 3), (2, 0, 4), (3, 2, 2, 2), (2, 5, 5, 7)])
def test_images_of_odd_shapes(tmp_path, shape):
    path = tmp_path / "images.npz"
    np.savez(path, example_id=np.arange(shape[0]) if shape else np.arange(0), images=np.zeros(shape))
    loads_or_refuses(read_images, path)
