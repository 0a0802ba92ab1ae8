"""Shared plumbing: errors, atomic IO, typed params, paths, stage entry, skip log, MLflow tracking."""
