"""The `customer_profile_v1` feature service, what models train on and serving reads.

Every object is re-exported here too: run from `feature_repo/`, Feast imports `features.py` as
the `features` package (see `features/definitions.py`), so this file carries the view.
"""

from features.definitions import repo_definitions

customer = repo_definitions().entity
customer_profile_source = repo_definitions().source
customer_profile_30d = repo_definitions().view
customer_profile_v1 = repo_definitions().service
