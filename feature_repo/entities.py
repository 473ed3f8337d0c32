"""The `customer` entity (join key `customer_id`), built from the feature contract."""

from churnops.features.definitions import repo_definitions

customer = repo_definitions().entity
