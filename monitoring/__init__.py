"""Monitoring: data quality, PSI drift, the promotion gate and its audit trail."""
