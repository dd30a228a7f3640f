"""Offline (training) data: a Parquet file in the format `livefeat load` takes.

The file is checked exactly as `livefeat load` checks it (same errors, naming
the column), read in batches with a progress bar, and reduced to the newest
row per entity: that row is what a load would have left in storage, so it is
what serving should answer for that entity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.core.registry import ViewPlan
from service.load import check_file, iter_batches
from service.report.sample import Id

BATCH_ROWS = 65_536


@dataclass(slots=True)
class OfflineView:
    """The newest offline row per entity of one view, sorted by id.

    `columns[feature]` is aligned with `ids`: a numpy array for numeric and bool
    features, a (rows, dim) float32 array for vectors, a list for strings.
    """

    path: Path
    rows_read: int
    ids: list[Id]
    columns: dict[str, Any]

    def index(self) -> dict[Id, int]:
        """Row number of each id."""
        return {i: n for n, i in enumerate(self.ids)}


def read_offline(plan: ViewPlan, path: Path, progress: Callable[[int], Any]) -> OfflineView:
    """Check and read `path` for `plan`; nulls become the feature defaults, as in a load.

    Raises LoadError (naming the file and the column) when the file does not fit.
    """
    pf = check_file(plan, path)
    batches = []
    for batch in iter_batches(pf, plan, BATCH_ROWS):
        batches.append(batch)
        progress(batch.num_rows)
    table = pa.Table.from_batches(batches, schema=batches[0].schema) if batches else None
    if table is None or table.num_rows == 0:
        return OfflineView(path, 0, [], {f.name: [] for f in plan.codec.features})
    keys = [table.column(k).to_numpy().astype(np.int64) for k in plan.key_columns]
    event_ms = _event_ms(table.column("event_time").combine_chunks())
    # Sort by key, then event time, then file position: the last row of each key
    # is its newest (of equal event times the later one; a load may keep either).
    order = np.lexsort((np.arange(len(event_ms)), event_ms, *reversed(keys)))
    sorted_keys = [k[order] for k in keys]
    last = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        same = np.ones(len(order) - 1, dtype=bool)
        for k in sorted_keys:
            same &= k[1:] == k[:-1]
        last[:-1] = ~same
    take = order[last]
    if len(keys) == 2:
        ids: list[Id] = list(zip(keys[0][take].tolist(), keys[1][take].tolist(), strict=True))
    else:
        ids = keys[0][take].tolist()
    picked = table.take(pa.array(take))
    columns = {f.name: _column(picked.column(f.name), f) for f in plan.codec.features}
    return OfflineView(path, table.num_rows, ids, columns)


def _event_ms(col: pa.Array) -> np.ndarray:
    """Event times as int64 ms, as a load reads them (timestamps of any unit floored to ms)."""
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("ms"), safe=False)
    return col.cast(pa.int64()).to_numpy()


def _column(col: pa.ChunkedArray, feature: Any) -> Any:
    col = col.combine_chunks()
    if feature.type == "string":
        return col.fill_null(feature.default).to_pylist()
    if feature.type == "float_vector":
        rows = [feature.default if v is None else v for v in col.to_pylist()]
        return np.asarray(rows, dtype=np.float32).reshape(-1, feature.dim)
    if feature.type == "bool":
        return col.fill_null(bool(feature.default)).to_numpy(zero_copy_only=False)
    filled = col.fill_null(pc.cast(pa.scalar(feature.default), col.type))
    return filled.to_numpy(zero_copy_only=False).astype(np.float64)
