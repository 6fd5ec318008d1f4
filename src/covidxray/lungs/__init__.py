"""Lung-field segmentation: a small U-Net trained on phantom and radiologist lung masks.

:mod:`~covidxray.lungs.segment` loads the shipped weights (``models/lungs/lungs.keras``) and predicts
masks at any image size; :mod:`~covidxray.lungs.unet` builds the network, :mod:`~covidxray.lungs.metrics`
scores masks (Dice, HD95), :mod:`~covidxray.lungs.train`, :mod:`~covidxray.lungs.predict` and
:mod:`~covidxray.lungs.evaluate` back the ``covidxray lungs`` commands. Importing this package loads
no TensorFlow.
"""
