"""The lean runtime: a bundle on the fastest backend this machine has, images or video in, labels out.

Uses only numpy, OpenCV and the chosen engine (ONNX Runtime, OpenVINO, TensorRT or CoreML); it never imports torch.
This is the API the CLI, ``edgecls bench`` and the server and batch jobs built on the runtime call::

    from edgecls.runtime import Classifier
    clf = Classifier("bundle/")            # backend="auto": picks and logs the backend, device and artifact
    clf.predict("photo.jpg").labels        # labels at the artifact's tuned thresholds
    clf.predict_batch(images)              # paths, BGR uint8 arrays or encoded bytes, in order
    clf.probs(batch)                       # (N, K) probabilities for an already preprocessed (N, 3, H, W) batch
    clf.info()                             # what runs and why: artifact, backend, device, precision, reason

Planning (nothing is loaded): the module :mod:`edgecls.runtime.plan` (``from edgecls.runtime import plan``; the
name ``plan`` here is the module, its function is ``plan.plan``):

* :func:`plan.plan(manifest, root, backend=, device=, artifact=) <edgecls.runtime.plan.plan>` -> ``list[Choice]``: the
  ways to run a bundle here, best first. ``auto`` ranks every installed backend's devices and picks each one's
  artifact (INT8 where the device runs it fast); an explicit backend gives exactly one choice or an error that names
  what is missing and what runs here, never another backend.
* :class:`Choice`: ``artifact``, ``path`` (the file to load), ``backend``, ``device``, ``precision`` (asked of the
  backend), ``reason`` (one line: why), ``candidate`` (the backend's device).
* :func:`plan.plan_all(manifest, root, backends=, artifacts=) <edgecls.runtime.plan.plan_all>` ->
  ``(choices, not_run)``: every artifact x backend x device x precision this machine can run (what ``edgecls bench``
  times).
* :func:`check_artifact_files`: the one check of an artifact's files (inside the bundle, present, sha256) before one
  is opened; :func:`plan.model_path` and :func:`plan.precision_for`: the file and precision a backend gets for an
  artifact.

Loading:

* :class:`Classifier` loads ``plan``'s choices in order through :func:`open_first`, the one fallback loop (``auto``
  moves on when a choice fails to load; an explicit backend raises).
* :func:`open_backend(model_path, backend=, device=, threads=, precision_hint=, emulate_qdq=) <open_backend>` loads
  one model file (no bundle) on a :class:`Backend` (``infer(batch) -> logits``, ``info()``, ``close()``); backend
  options such as ONNX Runtime's Q/DQ emulation go through it.
* :func:`available_backends` -> ``list[BackendStatus]``: installed or not, devices, version, the extra to install.

Commands' logic (no click): :mod:`edgecls.runtime.commands` (:func:`predict_paths`, :func:`run_stream`) and
:mod:`edgecls.runtime.doctor` (:func:`doctor_report`, :class:`DoctorReport`). Files, streams and video:
:mod:`edgecls.runtime.files` (:func:`collect_images`, :func:`predict_files`), :mod:`edgecls.runtime.stream`
(:func:`parse_source`, :func:`stream_frames`), :mod:`edgecls.runtime.video` (overlay, display, video writer). Model
metadata without a bundle: :mod:`edgecls.runtime.metadata`.
"""

from edgecls.runtime import plan
from edgecls.runtime.backends import Backend, BackendStatus, available_backends, open_backend, open_first
from edgecls.runtime.classifier import Classifier, Prediction
from edgecls.runtime.commands import predict_paths, run_stream
from edgecls.runtime.doctor import DoctorReport, doctor_report
from edgecls.runtime.plan import Choice, check_artifact_files

__all__ = [
    "Backend",
    "BackendStatus",
    "Choice",
    "Classifier",
    "DoctorReport",
    "Prediction",
    "available_backends",
    "check_artifact_files",
    "doctor_report",
    "open_backend",
    "open_first",
    "plan",
    "predict_paths",
    "run_stream",
]
