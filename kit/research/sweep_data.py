"""A recording as a sweep sees it: its days, and one day's ticks, from a local path or an fsspec URL.

    days = recording_days("data/ticks", days=None)               # ["2026-01-05", "2026-01-06", ...]
    table = read_day("s3://bucket/ticks", "2026-01-05", tokens=["43650"])

The layout is the recorder's hive layout (``kit.store.recording``):
``ROOT/day=.../exchange_type=.../token=.../*.parquet``. Paths without a
scheme are local files; a URL (``file://``, ``s3://``, ``gcs://``, ...)
goes through fsspec, so workers on other machines read shared storage. A
worker reads one day (optionally a few tokens) and nothing else: pyarrow
prunes the other partitions by their directory names.
"""
from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds

from kit.store.recording import (PARTITIONING, QUOTE_COLUMNS, READ_SCHEMA, _day_strings, in_recorded_order,
                                 normalize_ticks)

__all__ = ["recording_url", "recording_days", "read_day"]


def _filesystem(data) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(str(data))
    return fs, root.rstrip("/")


def recording_url(data) -> str:
    """``data`` as a full URL (a local path made absolute): what a worker with another cwd can open."""
    fs, root = _filesystem(data)
    return fs.unstrip_protocol(root)


def recording_days(data, days=None) -> list[str]:
    """The recorded days (ISO strings, sorted) under ``data``, restricted to ``days`` when given."""
    fs, root = _filesystem(data)
    if not fs.isdir(root):
        raise FileNotFoundError(f"no recording directory at {data}")
    found = sorted(name.rsplit("/", 1)[-1].removeprefix("day=")
                   for name in fs.ls(root, detail=False) if name.rsplit("/", 1)[-1].startswith("day="))
    if days is None:
        return found
    wanted = _day_strings(days)
    missing = [d for d in wanted if d not in found]
    if missing:
        raise ValueError(f"no recorded day {missing} under {data} (it has {found})")
    return [d for d in found if d in wanted]


def read_day(data, day: str, *, tokens=None, exchange_type: int | None = None) -> pa.Table:
    """One day of a recording, in recorded order, checked as a replay needs it."""
    fs, root = _filesystem(data)
    # Hidden files ("." in progress, "_" metadata) are not ticks, as for read_recording.
    files = sorted(path for path in fs.find(f"{root}/day={day}")
                   if path.endswith(".parquet") and not path.rsplit("/", 1)[-1].startswith((".", "_")))
    if not files:
        return normalize_ticks(READ_SCHEMA.empty_table())
    dataset = ds.dataset(files, filesystem=fs, format="parquet", schema=READ_SCHEMA,
                         partitioning=ds.partitioning(PARTITIONING, flavor="hive"), partition_base_dir=root)
    condition = None
    if tokens is not None:
        condition = ds.field("token").isin([str(t) for t in ([tokens] if isinstance(tokens, str) else tokens)])
    if exchange_type is not None:
        match = ds.field("exchange_type") == exchange_type
        condition = match if condition is None else condition & match
    table = in_recorded_order(dataset.to_table(filter=condition), data)
    # An LTP recording has no quotes: its all-null quote columns would be most of what a worker holds.
    empty = [c for c in QUOTE_COLUMNS if table.num_rows and table[c].null_count == table.num_rows]
    return normalize_ticks(table.drop_columns(empty))
