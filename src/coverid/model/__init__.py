"""Encoders, their layers, losses and the saved-model wrapper (embedder)."""
