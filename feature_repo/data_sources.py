"""The offline feature table under `$CHURNOPS_HOME/data/features`, as a Feast file source."""

from churnops.features.definitions import repo_definitions

customer_profile_source = repo_definitions().source
