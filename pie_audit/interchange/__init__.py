"""The interchange format: population directories, ``predictions.parquet``, ``run.json``, ``population.json``.

The only code that builds and reads these files (``docs/interchange-format.md``); every other
wing calls it. Needs numpy, pandas and pyarrow, never torch.

- :mod:`._records`: ``run.json`` and ``population.json`` (format tags, file names, building,
  reading, the finished-model check);
- :mod:`._predictions`: ``predictions.parquet`` (columns, checks, probability columns);
- :mod:`._population`: :class:`Population`, from arrays, read from and written to a population
  directory;
- :mod:`._agreement`: whether models and populations agree on their examples, labels and classes
  (:func:`check_populations`);
- :mod:`._provenance`: what a population's ``run.json`` files say about how it was made;
- :mod:`._groups`: groups tables, the attributes of each test example (``groups.parquet``).
"""

from __future__ import annotations

from ._agreement import check_populations
from ._groups import GROUPS_FILE, MAX_GROUP_VALUES, GroupTable, read_groups, write_groups
from ._population import Population, load_population, write_population
from ._predictions import read_predictions, write_predictions
from ._probabilities import mean_probabilities
from ._provenance import population_provenance
from ._review import CATEGORIES, CATEGORY_DEFINITIONS, KEY_FILE, SHEET_FILE, TALLY_FILE, read_review, write_review, write_tally
from ._records import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    POPULATION_FILE,
    POPULATION_FORMAT,
    PREDICTIONS_FILE,
    RUN_FILE,
    RUN_FORMAT,
    RecordError,
    file_record,
    file_records,
    incomplete_reason,
    json_kind,
    parse_json,
    population_record,
    read_bounded,
    read_json_object,
    read_population_spec,
    read_run,
    run_record,
)

__all__ = [
    # the blinded review: sheet.csv, key.csv, tally.csv
    "CATEGORIES",
    "CATEGORY_DEFINITIONS",
    "KEY_FILE",
    "SHEET_FILE",
    "TALLY_FILE",
    "read_review",
    "write_review",
    "write_tally",
    # populations
    "Population",
    "check_populations",
    "load_population",
    "write_population",
    # predictions.parquet
    "read_predictions",
    "write_predictions",
    "mean_probabilities",
    # run.json and population.json, and the bounds on what is read
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MODEL_BYTES",
    "MODEL_FILE",
    "POPULATION_FILE",
    "POPULATION_FORMAT",
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "RUN_FORMAT",
    "RecordError",
    "file_record",
    "file_records",
    "incomplete_reason",
    "json_kind",
    "parse_json",
    "population_record",
    "read_bounded",
    "read_json_object",
    "read_population_spec",
    "read_run",
    "run_record",
    # provenance
    "population_provenance",
    # groups tables
    "GROUPS_FILE",
    "MAX_GROUP_VALUES",
    "GroupTable",
    "read_groups",
    "write_groups",
]
