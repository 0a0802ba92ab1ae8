"""Song search: the FAISS index on disk and the audio -> answers library behind the CLI."""
