"""The lean runtime: a bundle on the fastest backend this machine has, images or video in, labels out.

Uses only numpy, OpenCV and the chosen engine (ONNX Runtime, OpenVINO, TensorRT or CoreML); it never imports torch.

    from edgecls.runtime import Classifier
    clf = Classifier("bundle/")            # backend="auto": picks and logs the backend, device and artifact
    clf.predict("photo.jpg").labels        # labels at the artifact's tuned thresholds
"""

from edgecls.runtime._commands import DoctorReport, doctor_report
from edgecls.runtime.backends import Backend, BackendStatus, available_backends, open_backend
from edgecls.runtime.classifier import Classifier, Prediction

__all__ = [
    "Backend",
    "BackendStatus",
    "Classifier",
    "DoctorReport",
    "Prediction",
    "available_backends",
    "doctor_report",
    "open_backend",
]
