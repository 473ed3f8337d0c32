"""Training: labels, out-of-time split, models, MLflow runs and registered versions."""
