"""The job service: database, queue, keys, workers (the API lives in ``demixer.api``)."""
