"""Stage 1, the data: from files on disk to model-ready batches.

Image reading (:mod:`~covidxray.data.imageio`), dataset discovery (:mod:`~covidxray.data.discover`, over
the layouts of :mod:`~covidxray.data.layouts`), duplicates (:mod:`~covidxray.data.duplicates`) and
leak-free splits (:mod:`~covidxray.data.split`), the decode-once cache
(:mod:`~covidxray.data.cache`), the ``tf.data`` pipeline (:mod:`~covidxray.data.pipeline`),
augmentation (:mod:`~covidxray.data.augment`), synthetic phantoms and their anatomy
(:mod:`~covidxray.data.phantoms`, :mod:`~covidxray.data.anatomy`), the Kaggle download
(:mod:`~covidxray.data.datasets`) and the data figures beside them. Importing this package
imports nothing heavy; TensorFlow loads only with the modules that need it.
"""
