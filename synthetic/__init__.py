"""The seeded generator of the five landing sources, its schemas read from the contracts, and its faults."""
