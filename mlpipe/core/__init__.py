"""Config and its sections, errors, paths, lineage, retry policies, metrics, memory, the family registry."""
