"""Plumbing every stage may use and that uses no stage.

Modules:
    atomic: `write_atomic`, write-then-rename so a reader never sees half a file.
    lake: the lake's layout (`<lake>/<source>/date=YYYY-MM-DD/data.parquet`), its readers and writers.
    duck: `duckdb_connection`, the one DuckDB connection factory (UTC, no progress bar, memory, spill).
    times: UTC and epoch-microsecond conversions.
    layout: the folders of a home (`$CHURNOPS_HOME`), relative to it.
    keys: hashed API keys for the contract's approved consumers.
    crash: `crash_point`, deterministic kill -9 points for crash-safety tests (`$CHURNOPS_CRASH_AT`).
"""
