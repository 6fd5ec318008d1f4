"""Error types that the CLI turns into one clear line (importable without TensorFlow)."""


class WeightsError(RuntimeError):
    """Backbone weights could not be obtained (offline, missing or mismatching file)."""
