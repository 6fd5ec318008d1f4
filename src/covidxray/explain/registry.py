"""The explanation-method registry and :func:`explain`, the one call every method goes through.

Each family module lists its methods in a ``METHODS`` tuple of :class:`~covidxray.explain.method.Method`;
:data:`METHODS` collects them by name, in this order: activations, gradients, CAMs, occlusion.
The CLI help, the config check (:func:`check_methods`), ``covidxray interpret``, ``covidxray
explain`` and the gallery all read this registry, so adding a method is one function and one
``Method(...)`` entry in its family module. Importing this module does not import TensorFlow.

:func:`explain` returns ``(N, S, S)`` float32 maps in [0, 1] (see :mod:`covidxray.explain.core`
for the contract of images, targets and scores).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from covidxray.errors import UsageError
from covidxray.explain import activations, cams, gradients, occlusion
from covidxray.explain.method import Method

METHODS: dict[str, Method] = {m.name: m for fam in (activations, gradients, cams, occlusion) for m in fam.METHODS}
NAMES: tuple[str, ...] = tuple(METHODS)
MethodFn = Callable[[object, np.ndarray, np.ndarray], np.ndarray]


def check_methods(names: Sequence[str], where: str = "--method / explain.methods") -> list[str]:
    """The names as a list, or a UsageError naming the unknown ones and the known ones."""
    bad = [m for m in names if m not in METHODS]
    if bad:
        raise UsageError(f"unknown method(s) {bad} ({where}); known: {', '.join(NAMES)}")
    return list(names)


#: Config keys that name explanation methods (a list or one name each).
METHOD_KEYS = ("explain.methods", "explain.expensive", "robustness.cam_method", "robustness.shortcut.methods")


def config_problems(cfg: Mapping) -> list[str]:
    """One message per unknown method name in the config's :data:`METHOD_KEYS` (with a did-you-mean)."""
    import difflib

    out = []
    for key in METHOD_KEYS:
        value = _lookup(cfg, key)
        for name in [value] if isinstance(value, str) else value:
            if name not in METHODS:
                hint = difflib.get_close_matches(str(name), NAMES, n=1)
                out.append(f"'{key}': unknown method {name!r}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                           + f"; known: {', '.join(NAMES)}")
    return out


def expensive() -> list[str]:
    """Methods that cost hundreds of model passes per image (the default of ``explain.expensive``)."""
    return [m.name for m in METHODS.values() if m.expensive]


def _lookup(cfg: Mapping, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


def method_options(cfg: Mapping, layer: str | None = None) -> dict[str, dict]:
    """Keyword options of :func:`explain` per method from a config: each entry's ``options`` map
    option names to dotted config keys (``{"steps": "explain.ig_steps"}``), plus ``layer``."""
    return {m.name: {"layer": layer, **{opt: _lookup(cfg, key) for opt, key in m.options.items()}}
            for m in METHODS.values()}


def explain(model, images: np.ndarray, method: str, target=None, layer: str | None = None,
            *, score: str = "logit", batch_size: int = 32, **kw) -> np.ndarray:
    """Explain a batch of images with one method.

    Args:
        model: The classifier (raw 0-255 grayscale in, softmax out).
        images: ``(N, S, S)`` or ``(N, S, S, 1)`` raw 0-255 grayscale.
        method: One of :data:`NAMES`.
        target: ``None`` (predicted class), a class index, or ``N`` class indices.
        layer: Layer of the methods that need one (``needs_layer``); default
            :func:`covidxray.explain.core.default_layer`.
        score: ``"logit"`` or ``"prob"`` (see :mod:`covidxray.explain.core`).
        batch_size: Model inputs per pass (bounds memory).
        **kw: Method options: ``activation``: ``k=8`` channels averaged; ``smoothgrad``:
            ``n_samples=25``, ``noise=0.15`` (sigma as a fraction of each image's max - min), ``seed=0``;
            ``integrated_gradients``: ``steps=32`` (midpoint rule, black baseline); ``scorecam``:
            ``max_channels=256``; ``occlusion``: ``patch=S//8``, ``stride=patch//2``, ``fill=None``
            (image mean).

    Returns:
        ``(N, S, S)`` float32 maps in [0, 1].
    """
    from covidxray.explain.core import as_batch, default_layer, normalize_maps

    x = as_batch(model, images)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(NAMES)}")
    if len(x) == 0:
        return np.zeros((0, *x.shape[1:3]), np.float32)
    entry, layer = METHODS[method], layer or default_layer(model)
    if entry.needs_layer and tuple(model.get_layer(layer).output.shape[1:3]) == (1, 1):
        warnings.warn(f"layer '{layer}' is 1x1 at input size {x.shape[1]}: {method} maps are constant (zeros); "
                      "use a larger input or an earlier layer", stacklevel=2)
    return normalize_maps(entry.fn(model, x, target, score=score, batch_size=batch_size, layer=layer, **kw))


def method_fns(methods: Sequence[str] | Mapping[str, MethodFn], batch_size: int,
               options: Mapping[str, dict] | None = None) -> dict[str, MethodFn]:
    """``{name: fn(model, x, target)}`` for method names (with their ``options``), or a mapping as given."""
    if isinstance(methods, Mapping):
        return dict(methods)
    opts = options or {}
    return {m: (lambda mdl, x, t, m=m: explain(mdl, x, m, target=t, batch_size=batch_size, **opts.get(m, {})))
            for m in methods}
