"""Stage 4, explanations and how far they can be trusted.

A method registry (:mod:`~covidxray.explain.registry`: one entry per method, read by the CLI,
the config check, the interpret report and the gallery) over the methods grouped by family
(gradients, CAMs, occlusion, activations); the checks grouped as the literature groups them
(localisation, faithfulness, randomisation); the lesion ablation on phantoms, the interpret
report and the overlay figures. Importing this package imports nothing heavy.
"""
