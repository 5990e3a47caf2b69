"""Wire-compatible routers for the hosted APIs demixer replaces.

Each vendor is one thin translation of its protocol onto the native job path
(``demixer.api.submit`` / ``demixer.api.jobs`` / ``demixer.service.jobs.queue``): no job logic
of its own. The native API already is the AudioLasso shape. A vendor package has ``routes``
(its FastAPI router and error envelope) and, when it sends webhooks, ``wire`` (its payloads,
free of any web framework, so a worker can build them). The application
(:mod:`demixer.server.app`) mounts the routers; the composition root
(:mod:`demixer.server.compose`) hands the webhook builders to the outbox.
"""

__all__ = ["EVERY_METHOD"]

#: The methods a vendor's catch-all route answers (its own 404), so that no request under its
#: prefix meets the native 405 envelope; HEAD follows GET (``demixer.api.head``), and a method
#: that is not HTTP's never reaches the app (``demixer.server.protocol``).
EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
