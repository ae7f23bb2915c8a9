"""Units of work that run in this process or as Ray tasks: tuning workers, CV folds, permutation importance, the torch loop."""
