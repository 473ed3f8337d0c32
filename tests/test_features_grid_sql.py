"""The grid plan's pieces: each windowed feature adds its columns, window sums and joins in order."""

from __future__ import annotations

from test_features_lake import CONTRACT

from churnops.features.compute import (
    KEY_TS,
    TARGETS,
    WINDOW_AGGREGATIONS,
    Layout,
    _Grid,
    _grid_source,
    grid_sql,
)


def _grid() -> _Grid:
    layout = Layout.of(CONTRACT)
    g = layout.grain_us
    return _Grid(key='"customer_id"', grain_us=g, bucket=f"((ts_us + {g} - 1) // {g}) * {g}")


def test_a_source_adds_its_distinct_day_deltas_before_its_bucket_table() -> None:
    grid = _grid()
    features = [
        f for f in CONTRACT.features if f.source == "usage_events" and f.aggregation in WINDOW_AGGREGATIONS
    ]
    assert {"count", "count_distinct_days"} <= {f.aggregation for f in features}
    _grid_source(grid, "usage_events", features=features, lower_us=0)
    distinct = [f.name for f in features if f.aggregation == "count_distinct_days"]
    assert [c.split(" AS ", 1)[0] for c in grid.ctes] == [*(f'"d_{n}"' for n in distinct), '"b_usage_events"']
    assert len(grid.joins) == len(grid.key_sets) == len(grid.ctes)
    assert all(f'k."n_{n}"' == grid.aggregates[n] for n in distinct)


def test_a_mean_is_the_default_over_an_empty_window_never_a_division_by_zero() -> None:
    grid = _grid()
    mean = next(f for f in CONTRACT.features if f.aggregation == "mean")
    assert mean.decimals == 6
    _grid_source(grid, mean.source, features=[mean], lower_us=0)
    # The total is an integer of millionths: one division by (count x 10^6) gives the mean.
    assert grid.aggregates[mean.name] == (
        f'CASE WHEN k."c_{mean.name}" > 0 THEN CAST(k."s_{mean.name}" AS DOUBLE) / '
        f'CAST(k."c_{mean.name}" * 1000000 AS DOUBLE) END'
    )


def test_without_window_features_there_are_no_window_rows() -> None:
    sql = grid_sql(CONTRACT, set(), lower_us=0)
    assert "keys AS" not in sql and "LEFT JOIN k ON" not in sql
    assert sql.startswith(f'SELECT t."customer_id", t.{KEY_TS}') and f"FROM {TARGETS} t" in sql
