"""Reports written from a run folder alone: the model card (:mod:`covidxray.report.card`)."""
