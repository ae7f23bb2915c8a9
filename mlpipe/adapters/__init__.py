"""One adapter per external system: `mlflow` (split by concern) and `ray_cluster`."""
