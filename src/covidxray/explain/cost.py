"""Cost: seconds per image of each explanation method."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import pandas as pd

from covidxray.explain.registry import method_fns


def time_methods(model: keras.Model, images: np.ndarray, methods: Sequence[str], repeats: int = 1,
                 options: Mapping[str, dict] | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Seconds per image of each method on ``images``, after one untimed warm-up call that traces.

    Args:
        model: The classifier.
        images: Raw 0-255 grayscale ``(N, S, S[, 1])``.
        methods: Method names.
        repeats: Timed calls per method (the mean is reported).
        options: Per-method keyword options.
        batch_size: Model inputs per pass.

    Returns:
        DataFrame indexed by method: ``seconds_per_image``, ``first_call_seconds`` (tracing included).
    """
    fns, rows = method_fns(methods, batch_size, options), []
    for name, fn in fns.items():
        start = time.perf_counter()
        fn(model, images[:1], None)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            fn(model, images, None)
        rows.append({"method": name, "seconds_per_image": (time.perf_counter() - start) / (repeats * len(images)),
                     "first_call_seconds": first})
    return pd.DataFrame(rows).set_index("method")
