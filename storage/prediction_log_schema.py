"""The prediction log's schema: where it lives, its table and its columns.

Serving writes the log (`churnops.serving.prediction_log`) and monitoring reads it
(`churnops.monitoring.served`); monitoring may not import serving, so both take the names from
here and a rename cannot split them apart.

One row per customer prediction: the request, when, who, the model that answered, its
probability, the feature status (`present`, `stale` or `default`), the online snapshot, `known`
(1 when the online store held a snapshot of the customer), the features scored, and the
challenger's shadow score. Times are ISO-8601 text in UTC (`datetime.isoformat()`), so they sort
and compare as text.
"""

from __future__ import annotations

from typing import Any

DB_NAME = "predictions.db"
TABLE = "predictions"
JOURNAL_DIR = "journal"
# Where the committed part of the journal ends (one row, written with the rows it covers).
POSITION_TABLE = "_journal_position"

REQUEST_ID = "request_id"
ITEM = "item"
PREDICTED_AT = "predicted_at"
CUSTOMER_ID = "customer_id"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
PROBABILITY = "churn_probability"
RISK_BAND = "risk_band"
FEATURE_STATUS = "feature_status"
SNAPSHOT_TS = "snapshot_ts"
KNOWN = "known"
SHADOW_MODEL_VERSION = "shadow_model_version"
SHADOW_PROBABILITY = "shadow_probability"

STATUS_PRESENT = "present"
STATUS_STALE = "stale"
STATUS_DEFAULT = "default"

# The columns before the features, in table order, with their SQLite affinity as Python types.
LEADING_COLUMNS: dict[str, type] = {
    REQUEST_ID: str,
    ITEM: int,
    PREDICTED_AT: str,
    CUSTOMER_ID: str,
    MODEL_NAME: str,
    MODEL_VERSION: str,
    PROBABILITY: float,
    RISK_BAND: str,
    FEATURE_STATUS: str,
    SNAPSHOT_TS: str,
    KNOWN: int,
}
# The columns after the features.
TRAILING_COLUMNS: dict[str, type] = {SHADOW_MODEL_VERSION: str, SHADOW_PROBABILITY: float}
# pandas dtype name of a feature → its column type.
FEATURE_TYPES: dict[str, type] = {"int64": int, "float64": float, "object": str, "bool": int}


def table_schema(*, feature_columns: list[str], feature_dtypes: dict[str, str]) -> dict[str, Any]:
    """The table's columns in order: the leading ones, the features, the shadow score.

    Args:
        feature_columns: The logged feature columns, in order.
        feature_dtypes: pandas dtype name per feature column.

    Returns:
        Column name → Python type (`sqlite_utils` turns it into the SQLite type).
    """
    return {
        **LEADING_COLUMNS,
        **{c: FEATURE_TYPES[feature_dtypes[c]] for c in feature_columns},
        **TRAILING_COLUMNS,
    }
