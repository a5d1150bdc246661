"""`edgecls serve`: a bundle as an HTTP service (FastAPI + uvicorn), torch-free, on the runtime.

* :class:`ServeConfig` (:mod:`edgecls.serve.config`): every key of the command, YAML and flags alike.
* :class:`DynamicBatcher` (:mod:`edgecls.serve.batcher`): one inference thread; concurrent requests gathered up to
  ``max_batch`` / ``max_wait_ms``; a bounded queue (:class:`QueueFull` -> 503); ``infer(batch, timeout)`` for the
  live view's camera loop.
* :func:`create_app` (:mod:`edgecls.serve.app`): the routes (``/v1/classify``, ``/v1/classify/batch``,
  ``/v1/model``, KServe v2 under ``/v2``, ``/healthz``, ``/readyz``, ``/metrics``, ``/docs``).
* :func:`run_server` and :class:`Service` (:mod:`edgecls.serve.server`): classifier, warm-up, batcher, live view,
  uvicorn; SIGTERM finishes the requests in flight and exits 0.
* :mod:`edgecls.serve.auth` (API key), :mod:`edgecls.serve.metrics` (Prometheus).

FastAPI, uvicorn and prometheus-client come with the ``serve`` extra and are imported only when a server starts.
"""

from edgecls.serve.app import create_app
from edgecls.serve.batcher import BatcherClosed, DynamicBatcher, InferenceTimeout, QueueFull
from edgecls.serve.config import ServeConfig
from edgecls.serve.server import Service, run_server

__all__ = [
    "BatcherClosed",
    "DynamicBatcher",
    "InferenceTimeout",
    "QueueFull",
    "ServeConfig",
    "Service",
    "create_app",
    "run_server",
]
