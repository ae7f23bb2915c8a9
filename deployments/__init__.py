"""The code that creates the deployments of prefect.yaml (work pool + `prefect deploy`)."""
