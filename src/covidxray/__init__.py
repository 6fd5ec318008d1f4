"""covidxray: COVID-19 vs Normal vs Viral Pneumonia on chest X-rays.

InceptionV3 transfer learning (TensorFlow 2 / Keras 3), explanations (activation, saliency and
class-activation maps), and the checks that say how far the model and its maps can be trusted.
"""

__version__ = "0.1.0"

DEFAULT_CLASSES = ("COVID-19", "Normal", "Viral Pneumonia")
