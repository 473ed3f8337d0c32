"""The `customer_profile_30d` feature view: the contract's features plus `snapshot_ts`.

Not named `features.py`: with the working directory on `sys.path` (`python -c`, notebooks,
`python -m` from this folder) such a file would shadow the `features` package.
"""

from features.definitions import repo_definitions

customer_profile_30d = repo_definitions().view
