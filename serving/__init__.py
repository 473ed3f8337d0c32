"""The online prediction service: Feast online features + the `@champion` model from MLflow.

Modules:
    settings: `ServingSettings`, every tunable of the service in one validated object.
    features: `OnlineFeatureReader`, online reads with the contract's defaults and freshness rules.
    models: `ModelWatcher`, loads `@champion` / `@challenger` and swaps them when the aliases move.
    prediction_log: `PredictionLog`, the append-only log written off the request path.
    metrics: `ServingMetrics`, the Prometheus registry, and the middleware timing every request.
    app: `create_app`, the FastAPI application.
    server: `run_server`, uvicorn with the settings the service was benchmarked with.
"""
