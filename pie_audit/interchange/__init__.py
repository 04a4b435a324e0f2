"""The interchange format: population directories, ``predictions.parquet``, ``run.json``, ``population.json``.

The only code that builds and reads these files (``docs/interchange-format.md``); every other
wing calls it. Needs numpy, pandas and pyarrow, never torch.
"""

from __future__ import annotations

from ._provenance import population_provenance
from ._records import (
    POPULATION_FORMAT,
    RUN_FORMAT,
    file_record,
    file_records,
    incomplete_reason,
    json_kind,
    population_record,
    read_json_object,
    read_population_spec,
    run_record,
)
from ._store import (
    MODEL_FILE,
    POPULATION_FILE,
    PREDICTIONS_FILE,
    RUN_FILE,
    Population,
    check_populations,
    load_population,
    read_predictions,
    read_run,
    write_population,
    write_predictions,
)

__all__ = [
    "MODEL_FILE",
    "POPULATION_FORMAT",
    "RUN_FORMAT",
    "file_record",
    "file_records",
    "incomplete_reason",
    "json_kind",
    "population_record",
    "read_json_object",
    "read_population_spec",
    "run_record",
    "POPULATION_FILE",
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "Population",
    "check_populations",
    "load_population",
    "population_provenance",
    "read_predictions",
    "read_run",
    "write_population",
    "write_predictions",
]
