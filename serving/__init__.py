"""The online prediction service: Feast online features + the `@champion` model from MLflow.

Modules:
    settings: `ServingSettings`, every tunable of the service in one validated object.
    features: `OnlineFeatureReader`, online reads with the contract's defaults and freshness rules.
    models: `ModelWatcher`, loads `@champion` / `@challenger` and swaps them when the aliases move.
    prediction_log: `PredictionLog`, the append-only log written off the request path.
    journal: the prediction log's write-ahead journal (answered predictions survive SIGKILL).
    metrics: `ServingMetrics`, the Prometheus registry, and the middleware timing every request.
    app: `create_app`, the FastAPI application: start-up, shutdown and the wiring of the parts below.
    schemas: the request and response bodies (the OpenAPI schemas).
    errors: `ServiceError` and the handlers that answer every error with an `ErrorBody`.
    auth: `authorize`, the API-key dependency of the prediction routes.
    limits: `BodyDeadline`, the 408 for a request body that does not arrive in time.
    docs: Swagger UI from installed files, and the OpenAPI document's keys and batch limits.
    state: `ServiceState` on `app.state.service`, and the `Runtime` start-up opens.
    scorer: `Scorer`, online read → feature status → champion → predictions → prediction log.
    batcher: `MicroBatcher`, concurrent single predictions scored in one call.
    routers: the routes (predictions, health/readiness probes, Prometheus metrics).
    server: `run_server`, uvicorn with the settings the service was benchmarked with.
"""
