"""What ships inside every registered model: conform, features, the mlp estimator; nothing here imports MLflow, Ray or Prefect."""
