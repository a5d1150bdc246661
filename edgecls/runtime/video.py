"""Video out: the labels drawn on a frame, a window that shows frames, and a video file writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecls.errors import DataError, UnsupportedOption
from edgecls.runtime.stream import FrameResult, _cv2


def draw_overlay(frame: np.ndarray, result: FrameResult, *, top: int = 5) -> np.ndarray:
    """Draw FPS, latency and the top classes with probabilities (labels that are on in green) onto ``frame``."""
    cv2 = _cv2()
    h = frame.shape[0]
    scale = max(0.4, h / 720.0 * 0.7)
    thick = max(1, int(round(scale * 2)))
    line = int(28 * scale) + 4
    pred = result.prediction
    items = sorted(pred.probabilities.items(), key=lambda kv: -kv[1])[:top]
    lines = [(f"{result.fps:5.1f} FPS  {result.latency_ms:5.1f} ms", (255, 255, 255))]
    lines += [(f"{name} {p:.2f}", (80, 220, 80) if name in pred.labels else (170, 170, 170)) for name, p in items]
    width = int(max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t, _ in lines)) + 16
    box_h = line * len(lines) + 8
    roi = frame[:box_h, :width]
    roi[:] = (roi * 0.45).astype(frame.dtype)
    for i, (text, color) in enumerate(lines):
        cv2.putText(frame, text, (8, line * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    return frame


class Display:
    """``cv2.imshow`` window; raises UnsupportedOption when this OpenCV has no GUI (opencv-python-headless)."""

    def __init__(self, title: str) -> None:
        cv2 = _cv2()
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise UnsupportedOption(
                "--show needs OpenCV with a GUI (pip install opencv-python instead of opencv-python-headless) and a "
                f"display; use --no-show ({str(exc).strip().splitlines()[-1]})"
            ) from None

    def show(self, frame: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        cv2 = _cv2()
        cv2.imshow(self.title, frame)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2 = _cv2()
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class VideoSink:
    """An mp4 writer (codec mp4v) opened on the first frame, when the frame size is known."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self._writer = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                raise DataError(f"{self.path}: cannot write video (mp4v codec unavailable in this OpenCV?)")
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
