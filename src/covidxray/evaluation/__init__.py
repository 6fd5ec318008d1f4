"""Stage 3, evaluation: how good is a run, and how sure is it?

Metrics with bootstrap intervals (:mod:`~covidxray.evaluation.metrics`), calibration
(:mod:`~covidxray.evaluation.calibration`), prediction on new images
(:mod:`~covidxray.evaluation.predict`), the evaluate report (:mod:`~covidxray.evaluation.evaluate`),
its figures (:mod:`~covidxray.evaluation.plots`) and the one "open a run and score images"
sequence that evaluation, robustness and the probes share (:mod:`~covidxray.evaluation.scoring`).
Importing this package imports nothing heavy.
"""
