"""Evaluation: distances, metrics, query expansion, threshold tuning, baselines, plots."""
