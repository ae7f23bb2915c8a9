"""mlpipe: tabular training pipelines on Prefect 3 and MLflow.

The library's folders are its layers, and imports point down (tests/unit/test_layers.py):
`core` (config, errors, paths, lineage, retries, metrics, memory, the family registry) <-
`model` (what ships inside every registered model) <- `data` (reading, validation, splitting,
drift) <- `compute` (units of work that run here or on Ray) <- `adapters` (MLflow, Ray) <-
`stages` (what each pipeline step does, without Prefect). Nothing here imports Prefect except
`cli`. The Prefect tasks (`mlpipe.tasks`, the tasks/ folder) wrap the stages, the flows
(`mlpipe.flows`, flows/) compose the tasks, and `cli` runs the flows.
"""
