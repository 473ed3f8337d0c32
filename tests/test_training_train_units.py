"""The pieces `train` and `run_training` are wired from, without a store or a tracking server."""

from __future__ import annotations

import pandas as pd
import pytest
from test_training_helpers import START

from churnops.training.labels import ENTITY_COLUMN, TIME_COLUMN
from churnops.training.train import Lineage, _check_same_rows, _run_tags

LINEAGE = Lineage(
    feature_service="customer_profile_v1",
    feature_service_version=1,
    feast_project="churnops",
    feature_refs=["customer_profile_30d:sessions_30d"],
    data_start=START,
    data_end=START + pd.Timedelta(days=90),
)


def test_run_tags_name_the_git_commit_only_for_a_git_code_version() -> None:
    tagged = _run_tags(lineage=LINEAGE, version_of_code="git:abc123")
    assert tagged["code_version"] == "git:abc123"
    assert tagged["mlflow.source.git.commit"] == "abc123"
    assert tagged["feast.feature_service"] == "customer_profile_v1"
    untagged = _run_tags(lineage=LINEAGE, version_of_code="churnops-0.1.0")
    assert "mlflow.source.git.commit" not in untagged
    assert untagged == {**LINEAGE.tags(), "code_version": "churnops-0.1.0"}


def _keys(ids: list[str]) -> pd.DataFrame:
    times = pd.Series([START + pd.Timedelta(days=i) for i in range(len(ids))], dtype="datetime64[us, UTC]")
    return pd.DataFrame({ENTITY_COLUMN: ids, TIME_COLUMN: times})


def test_the_same_rows_in_the_same_order_pass() -> None:
    keys = _keys(["c1", "c2", "c3"])
    _check_same_rows(features=keys.copy(), keys=keys)


@pytest.mark.parametrize(
    "change",
    [
        lambda keys: keys.head(2),
        lambda keys: keys.assign(**{ENTITY_COLUMN: ["c1", "c3", "c2"]}),
        lambda keys: keys.assign(**{TIME_COLUMN: keys[TIME_COLUMN] + pd.Timedelta(hours=1)}),
    ],
    ids=["fewer rows", "other customers", "other times"],
)
def test_other_feature_rows_are_refused(change) -> None:
    keys = _keys(["c1", "c2", "c3"])
    with pytest.raises(ValueError, match="a training set must keep its entity frame's rows"):
        _check_same_rows(features=change(keys), keys=keys)
