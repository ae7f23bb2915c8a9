"""The `mlpipe` command and the local Prefect server it keeps."""
