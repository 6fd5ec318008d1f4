"""Stage 2, training: :func:`covidxray.training.train.train` turns a config and a dataset into a
run folder; :mod:`~covidxray.training.callbacks` holds the callbacks, learning-rate schedules,
seeding and distribution strategies it uses, :mod:`~covidxray.training.checkpoints` the crash-safe
checkpoints and resume. Importing this package imports nothing heavy.
"""
