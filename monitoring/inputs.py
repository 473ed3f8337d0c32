"""The frames and reports monitoring checks, read from explicit paths.

The drift, quality and promotion checks compare a reference with the current features; these
helpers find the current ones in the feature table and the lake, or read a frame a user supplies.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnops.errors import ChurnopsError

if TYPE_CHECKING:
    import pandas as pd

    from churnops.contracts.feature_contract import FeatureContract


class InputProblem(ChurnopsError):
    """A frame or store a check needs is missing or unusable."""


def read_frame(*, path: Path) -> pd.DataFrame:
    """Read a user-supplied frame.

    Args:
        path: A `.parquet` or `.csv` file.

    Returns:
        The frame.

    Raises:
        InputProblem: When the file is missing or of another type.
    """
    import pandas as pd

    if not path.is_file():
        raise InputProblem(f"{path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise InputProblem(f"{path}: expected a .parquet or .csv file")


def current_features(
    *, features_dir: Path, lake_dir: Path, contract: FeatureContract
) -> tuple[pd.DataFrame, str]:
    """The latest snapshot of every active customer.

    Args:
        features_dir: The offline feature table's folder.
        lake_dir: The lake (its `customers` source says who is active).
        contract: The feature contract.

    Returns:
        The frame and a label naming where it came from.

    Raises:
        InputProblem: When no feature table was built.
    """
    from churnops.features.table import read_latest
    from churnops.monitoring.drift import select_active
    from churnops.storage.lake import read_source

    latest = read_latest(features_dir=features_dir, contract=contract)
    if latest.empty:
        raise InputProblem(f"no feature table under {features_dir}: build features first, or pass --current")
    customers = read_source(lake_dir, "customers")
    if customers.empty:
        return latest, f"latest snapshot of all {len(latest)} customers (no customers source in the lake)"
    active = select_active(latest=latest, customers=customers, join_key=contract.entity.join_key)
    return active, f"latest snapshot of the {len(active)} active customers"


def ended_customers(*, lake_dir: Path, contract: FeatureContract, now: datetime) -> frozenset[str]:
    """Customers the contract's population has ended by `now` (e.g. churned).

    Args:
        lake_dir: The lake (the population's end source is read from it).
        contract: The feature contract (`population.ends_at`).
        now: The reference time (UTC, timezone-aware).

    Returns:
        Their ids; empty when the contract ends nobody or the lake has no such source.
    """
    import pandas as pd

    from churnops.storage.lake import read_source

    rule = contract.population.ends_at if contract.population else None
    if rule is None:
        return frozenset()
    rows = read_source(lake_dir, rule.source)
    key = contract.entity.join_key
    if rows.empty or key not in rows.columns or rule.column not in rows.columns:
        return frozenset()
    ends = pd.to_datetime(rows[rule.column], utc=True)
    return frozenset(rows.loc[ends <= pd.Timestamp(now).tz_convert("UTC"), key].dropna().astype(str))


def feature_table(*, features_dir: Path, contract: FeatureContract) -> pd.DataFrame:
    """The whole offline feature table.

    Args:
        features_dir: The offline feature table's folder.
        contract: The feature contract.

    Returns:
        The table.

    Raises:
        InputProblem: When no feature table was built.
    """
    from churnops.features.table import read_table

    table = read_table(features_dir=features_dir, contract=contract)
    if table.empty:
        raise InputProblem(f"no feature table under {features_dir}: build features first, or pass --table")
    return table


def lake_contract_report(*, lake_dir: Path) -> Any:
    """The source-contract checks of the whole lake.

    Args:
        lake_dir: The lake.

    Returns:
        The `ingestion.checks` report (`.passed`, `.results`).
    """
    from churnops.ingestion.checks import check_lake

    return check_lake(lake_dir=lake_dir)
