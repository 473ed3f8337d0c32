"""churnops: a feature-store-centric MLOps system for customer churn."""

__version__ = "0.1.0"
