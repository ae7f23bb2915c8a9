"""What each pipeline step does, as plain functions: the Prefect tasks in tasks/ wrap these."""
