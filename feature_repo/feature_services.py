"""The `customer_profile_v1` feature service, what models train on and serving reads."""

from churnops.features.definitions import repo_definitions

customer_profile_v1 = repo_definitions().service
