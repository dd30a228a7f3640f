"""The checks of `livefeat load`, on a Spark DataFrame, before anything is written.

The column types are checked from the schema; then ONE aggregation over the whole
DataFrame (a single Spark job, on the executors) finds null or negative keys, event
times outside what the stored header holds, NaN or infinite floats, values outside
float32 where a feature is stored as float32, vectors of the wrong length (or with a
null element) and strings longer than the stored form allows. The limits are those
of service/core/codec.py. The first problem found raises LoadError naming the column,
the reason and the key of one offending row.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from service.core.codec import EVENT_TIME_MAX, FLOAT32_MAX, MAX_STRING_BYTES
from service.core.registry import ViewPlan
from service.errors import LoadError

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMBER = (*_INTEGRAL, T.FloatType, T.DoubleType)


def _type_ok(kind: str, t: T.DataType) -> bool:
    if kind == "int64":
        return isinstance(t, _INTEGRAL)
    if kind in ("double", "float"):
        return isinstance(t, _NUMBER)
    if kind == "bool":
        return isinstance(t, T.BooleanType)
    if kind == "string":
        return isinstance(t, T.StringType)
    return isinstance(t, T.ArrayType) and isinstance(t.elementType, _NUMBER)


def event_time_ms(df: DataFrame) -> Column:
    """The event_time column as int64 ms (timestamps are floored to ms)."""
    if isinstance(df.schema["event_time"].dataType, T.TimestampType):
        return F.unix_millis("event_time")
    return F.col("event_time").cast("long")


def check_schema(df: DataFrame, plan: ViewPlan) -> None:
    """Every column `plan` needs, with a type it can be stored as. Raises LoadError."""
    where = f"view {plan.name!r}: column"
    types = {f.name: f.dataType for f in df.schema.fields}
    for key in plan.key_columns:
        if key not in types:
            raise LoadError(f"{where} {key!r}: missing (the key of the view)")
        if not isinstance(types[key], _INTEGRAL):
            raise LoadError(
                f"{where} {key!r}: expected integers, found {types[key].simpleString()}"
            )
    if "event_time" not in types:
        raise LoadError(f"{where} 'event_time': missing (timestamp or integer milliseconds)")
    if not isinstance(types["event_time"], (*_INTEGRAL, T.TimestampType)):
        found = types["event_time"].simpleString()
        raise LoadError(f"{where} 'event_time': expected a timestamp or integer ms, found {found}")
    for f in plan.codec.features:
        if f.name not in types:
            raise LoadError(f"{where} {f.name!r}: missing (feature {f.type})")
        if not _type_ok(f.type, types[f.name]):
            found = types[f.name].simpleString()
            raise LoadError(f"{where} {f.name!r}: expected {f.type}, found {found}")


def _problems(df: DataFrame, plan: ViewPlan) -> list[tuple[str, str, Column]]:
    """(column, reason, condition true on a bad row) of every check of `plan`."""
    out: list[tuple[str, str, Column]] = []
    for key in plan.key_columns:
        out.append((key, "null key", F.col(key).isNull()))
        out.append((key, "negative id", F.col(key) < 0))
    et = event_time_ms(df)
    out.append(("event_time", "null", et.isNull()))
    out.append(("event_time", "outside 1970..year 10889 (ms 0..2**48-1)",
                (et < 0) | (et > EVENT_TIME_MAX)))  # fmt: skip
    types = {f.name: f.dataType for f in df.schema.fields}
    for f in plan.codec.features:
        col, t = F.col(f.name), types[f.name]
        if f.type in ("double", "float") and isinstance(t, (T.FloatType, T.DoubleType)):
            out.append(
                (
                    f.name,
                    "NaN or infinite value",
                    F.isnan(col) | (F.abs(col) == F.lit(float("inf"))),
                )
            )
            if f.type == "float":
                out.append((f.name, "value out of the float32 range", F.abs(col) > FLOAT32_MAX))
        elif f.type == "float_vector":
            out.append((f.name, f"not {f.dim} values", col.isNotNull() & (F.size(col) != f.dim)))
            out.append((f.name, "a null value", F.exists(col, lambda x: x.isNull())))
            if isinstance(t.elementType, (T.FloatType, T.DoubleType)):  # type: ignore[attr-defined]
                bad = F.exists(col, lambda x: F.isnan(x) | (F.abs(x) > FLOAT32_MAX))
                out.append((f.name, "NaN, infinite or out of the float32 range", bad))
        elif f.type == "string":
            reason = f"string longer than {MAX_STRING_BYTES} UTF-8 bytes"
            out.append((f.name, reason, F.octet_length(col) > MAX_STRING_BYTES))
    return out


def check_frame(df: DataFrame, plan: ViewPlan) -> int:
    """Check `df` as `livefeat load` checks a file; returns its row count. Raises LoadError
    naming the column, the reason and one offending row's key."""
    check_schema(df, plan)
    problems = _problems(df, plan)
    counts: list[Any] = [F.count(F.lit(1)).alias("rows")]
    counts += [F.count(F.when(cond, 1)).alias(f"p{i}") for i, (_, _, cond) in enumerate(problems)]
    found = df.agg(*counts).first()
    assert found is not None  # an aggregation without grouping has one row
    for i, (column, reason, cond) in enumerate(problems):
        if found[f"p{i}"]:
            row = df.where(cond).select(*plan.key_columns).first()
            key = ", ".join(f"{k}={row[k]}" for k in plan.key_columns) if row else "?"
            raise LoadError(f"view {plan.name!r}: column {column!r}: {reason} "
                            f"({found[f'p{i}']} rows, e.g. {key})")  # fmt: skip
    return int(found["rows"])
