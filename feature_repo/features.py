"""The `customer_profile_30d` feature view: the contract's features plus `snapshot_ts`."""

from churnops.features.definitions import repo_definitions

customer_profile_30d = repo_definitions().view
