"""Point-in-time `customer_profile` features: computed from the lake, served through Feast.

`build` computes snapshots at the contract's grain into the offline feature table (`table`),
`training_set` joins them to entity rows through Feast, `materialize` refreshes every customer's
snapshot and loads the online store, `parity` checks that online and offline agree.
"""
