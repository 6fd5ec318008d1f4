"""Error types that the CLI turns into one clear line (importable without TensorFlow)."""


class WeightsError(RuntimeError):
    """Backbone weights could not be obtained (offline, missing or mismatching file)."""


class UsageError(ValueError):
    """An option the command cannot use: unknown method, layer, corruption or class, empty selection."""
