"""The HTTP API (the native demixer shape, modelled on AudioLasso): ``create_app(services)``.

The API validates a request completely, then queues a job whose ``params`` are the contract
with the worker (``demixer.service.worker`` reads exactly this)::

    {
      "input": {"file_id", "storage_key", "file_name",    # an uploaded, probed file
                "duration"}                               # (seconds, for listings)
             | {"audio_url"},                             # http(s); the worker fetches it
      "stems": ["vocals", "residual"],    # engine output names, a named residual included;
                                          # pass to Separator.separate_file(path, out, stems):
                                          # an unnamed residual is added there when the stems
                                          # leave part of the model out, and dropped if silent
      "output_format": "wav" | "flac" | "mp3",
      "bit_depth": "16" | "24" | "32f" | None,            # OutputFormat.parse(format, depth)
      "quality": "fast" | "balanced" | "best",   # the request's, else settings.quality; jobs
                                                 # queued before levels existed lack it: fast
      "names": {"vocals": "target", "residual": "residual"},  # engine output -> API name
      "spans": [{"start", "end", "include"}] | None,      # seconds; audio/separate only
      "webhook": {"url", "secret"} | None,                # delivery comes with webhooks
      "preprocess": ["denoise"],          # optional; applied to the input before separation,
                                          # so stems + residual add up to the denoised input
      "prompt": "the singer",             # audio/separate: the prompt (for listings)
      "labels": {"target": "vocals", "residual": "without-vocals"},  # download file names
    }

The worker stores output ``n`` as ``outputs/{job_id}/attempt-{a}/{names[n]}.{ext}`` and
completes the job with ``outputs = {names[n]: {"key", "content_type", "file_name", "size",
"duration", "sample_rate", "channels"}}``, which ``GET …/result`` turns into signed URLs.

``audio/separate`` names the prompt's stem ``target`` and the residual ``residual``; for
"everything but X" prompts the two are swapped (``{"X": "residual", "residual": "target"}``).
``audio/stems`` keeps the engine names (each stem, plus ``residual`` or the alias the caller
typed, e.g. ``instrumental``); ``names`` lists the residual even when it may be dropped.
"""

from demixer.api.app import create_app

__all__ = ["create_app"]
