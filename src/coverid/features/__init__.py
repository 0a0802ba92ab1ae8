"""Chroma features: essentia extraction, collection-wide parallel extraction, model-input transforms."""
