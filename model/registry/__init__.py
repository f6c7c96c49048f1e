"""The model registry on shared storage (versions: Registry, its aliases and promotion gate)
and the training report it stores with each version (report)."""
