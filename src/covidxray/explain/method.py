"""The registry entry of one explanation method (a plain dataclass; no TensorFlow at import).

A method is a function ``fn(model, x, target, *, score, batch_size, layer, **options)`` that takes
the checked ``(N, S, S, 1)`` float32 batch and returns raw ``(N, S, S)`` maps (any scale; the
caller :func:`covidxray.explain.registry.explain` normalises them). Each family module
(:mod:`~covidxray.explain.gradients`, :mod:`~covidxray.explain.cams`,
:mod:`~covidxray.explain.occlusion`, :mod:`~covidxray.explain.activations`) lists its methods in
a module-level ``METHODS`` tuple of :class:`Method`; the registry collects them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    """One explanation method.

    Attributes:
        name: The name users type (CLI ``--method``, ``explain.methods``, notebooks).
        fn: The map function (see the module docstring).
        needs_layer: It reads a layer's activations (``explain.cam_layer`` / ``--layer`` apply).
        expensive: Hundreds of model passes per image (the default of ``explain.expensive`` lists these).
        options: Keyword option of ``fn`` -> the dotted config key that sets it
            (e.g. ``{"steps": "explain.ig_steps"}``); read by :func:`~covidxray.explain.registry.method_options`.
        summary: One line for help texts, with the citation.
    """

    name: str
    fn: Callable
    needs_layer: bool = False
    expensive: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
