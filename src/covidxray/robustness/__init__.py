"""Stage 5, robustness: does the model hold up, and does it look where it should?

Image corruptions (:mod:`~covidxray.robustness.corruptions`), the corruption sweep
(:mod:`~covidxray.robustness.sweep`), the planted-shortcut probe on phantoms
(:mod:`~covidxray.robustness.shortcut`) and the real-data probes (:mod:`~covidxray.robustness.probes`).
Importing this package imports nothing heavy.
"""
