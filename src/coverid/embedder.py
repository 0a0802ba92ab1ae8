"""Import shim: MLflow pyfunc models logged before the package layout pickled references to
`coverid.embedder.load_embedder`; they still load through this name."""

from coverid.model.embedder import Embedder, load_embedder  # noqa: F401
