"""The HTTP API (the native demixer shape, modelled on AudioLasso), composed by
:func:`demixer.server.app.create_app`.

The API validates a request completely (:mod:`demixer.api.submit`), then queues a job whose
parameters are the job contract, :class:`demixer.service.jobs.contract.JobParams` (the one
place their shape is written down). The worker stores output ``n`` as
``outputs/{job_id}/attempt-{a}/{names[n]}.{ext}``; ``GET …/result`` turns the job's outputs
into signed URLs (:mod:`demixer.api.jobs`).

``audio/separate`` names the prompt's stem ``target`` and the residual ``residual``; for
"everything but X" prompts the two are swapped (``{"X": "residual", "residual": "target"}``).
``audio/stems`` keeps the engine names (each stem, plus ``residual`` or the alias the caller
typed, e.g. ``instrumental``); ``names`` lists the residual even when it may be dropped.
"""
