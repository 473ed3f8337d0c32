"""Plumbing every stage may use and that uses no stage.

Modules:
    atomic: `write_atomic`, write-then-rename so a reader never sees half a file.
    staging: `StagedFiles`, several files committed as one (stage, record, rename; roll forward
        or back after a crash) and `remove_orphans` for temporaries a killed writer left.
    crash: `crash_point`, a deterministic kill -9 at a named step (`CHURNOPS_CRASH_AT`), for tests.
    lake: the lake's layout (`<lake>/<source>/date=YYYY-MM-DD/data.parquet`), its readers and writers.
    duck: `duckdb_connection`, the one DuckDB connection factory (UTC, no progress bar, memory, spill).
    times: UTC and epoch-microsecond conversions.
    layout: the folders of a home (`$CHURNOPS_HOME`), relative to it.
    keys: hashed API keys for the contract's approved consumers.
    lock: `workspace_lock`, one writer per home (`fcntl.flock`, freed by the kernel when its holder dies).
    modes: files private to the account (0600/0700); `private_umask` for the command line.
    crash: `crash_point`, deterministic kill -9 points for crash-safety tests (`$CHURNOPS_CRASH_AT`).
"""
