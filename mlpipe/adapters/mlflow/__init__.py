"""The MLflow adapter, split by concern; it imports no Prefect, and no module creates a client
at import time.

- `tracking`: the tracking store, experiments and runs (params, metrics, tables, artifacts).
- `models`: logging a model (skops with trusted types, signature, input example), registering
  it with its lineage, loading it, reading its input schema.
- `versions`: registered versions: resolving a number or alias, tags, descriptions, their run.
- `aliases`: champion and challenger, the promotion lock, the promotion history, rollback.
- `studies`: Optuna studies as runs: a parent run per study, a child run per trial.
"""
