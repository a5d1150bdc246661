"""Engine lanes (issue 15): the throughput mode's settings as each engine resolves them, ``submit`` with several
batches in flight, and the video and folder pipelines that keep every lane busy, on tiny real bundles."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import make_video, reference_input


def _bundle(which: str, request) -> dict:
    return request.getfixturevalue("onnx_bundle" if which == "onnxruntime" else "full_bundle")


def test_openvino_modes_are_set_in_one_place_and_read_back(full_bundle):
    """Throughput on a CPU: the THROUGHPUT hint and unpinned streams (decoding shares the cores); latency keeps
    OpenVINO's defaults. ``info()`` shows what the compiled model resolved."""
    from edgecls.runtime import Classifier
    from edgecls.runtime.backends.openvino import compile_config

    assert compile_config("throughput", "CPU") == {"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": False}
    assert compile_config("throughput", "GPU.0") == {"PERFORMANCE_HINT": "THROUGHPUT"}
    assert compile_config("latency", "CPU", threads=2, precision="f32") == {"INFERENCE_PRECISION_HINT": "f32",
                                                                           "INFERENCE_NUM_THREADS": 2}
    with Classifier(full_bundle["root"], backend="openvino", artifact="openvino", mode="throughput") as thr, \
            Classifier(full_bundle["root"], backend="openvino", artifact="openvino") as lat:
        got, base = thr.info()["backend"], lat.info()["backend"]
        assert got["settings"]["PERFORMANCE_HINT"] == "THROUGHPUT" and got["settings"]["ENABLE_CPU_PINNING"] is False
        assert got["lanes"] == got["infer_requests"] == thr.lanes >= 1
        assert base["settings"]["PERFORMANCE_HINT"] == "LATENCY" and base["lanes"] == lat.lanes == 1


def test_onnxruntime_modes_are_set_in_one_place(onnx_bundle):
    from edgecls.runtime import Classifier
    from edgecls.runtime.backends.onnxruntime import CPU, CUDA, session_settings

    assert session_settings("throughput", CPU, 3) == {"lanes": 3, "intra_op_num_threads": 1,
                                                      "inter_op_num_threads": 1,
                                                      "config": {"session.intra_op.allow_spinning": "0"}}
    assert session_settings("throughput", CUDA, None)["lanes"] == 1
    assert session_settings("latency", CPU, 2) == {"lanes": 1, "intra_op_num_threads": 2, "inter_op_num_threads": 1,
                                                   "config": {}}
    with Classifier(onnx_bundle["root"], backend="onnxruntime", mode="throughput", threads=2) as thr:
        info = thr.info()["backend"]
        assert thr.lanes == info["lanes"] == 2
        assert info["settings"]["config"] == {"session.intra_op.allow_spinning": "0"}


@pytest.mark.parametrize("which", ["onnxruntime", "openvino"])
def test_submit_runs_batches_side_by_side_with_the_results_of_probs(which, request):
    """More batches than lanes submitted before any result is taken, taken in reverse order: each equals probs()
    on its batch (a lane reused keeps its previous batch's result for that batch's handle)."""
    from edgecls.runtime import Classifier

    bundle = _bundle(which, request)
    with Classifier(bundle["root"], backend=which, mode="throughput", threads=2) as thr, \
            Classifier(bundle["root"], backend=which) as lat:
        assert thr.lanes == 2
        batches = [reference_input(n) + i for i, n in enumerate((3, 1, 5, 2, 4))]
        handles = [thr.submit(b) for b in batches]
        for handle, batch in reversed(list(zip(handles, batches))):
            np.testing.assert_allclose(handle.result(), lat.probs(batch), atol=1e-5)
        mid = thr.submit(batches[0])
        np.testing.assert_allclose(thr.probs(batches[2]), lat.probs(batches[2]), atol=1e-5)  # waits for lanes
        np.testing.assert_allclose(mid.result(), lat.probs(batches[0]), atol=1e-5)
        one = lat.submit(batches[1])  # one lane: runs now
        np.testing.assert_allclose(one.result(), lat.probs(batches[1]), atol=1e-6)


@pytest.mark.parametrize("which", ["onnxruntime", "openvino"])
def test_video_on_lanes_keeps_every_frame_in_order(which, request, tmp_path):
    """A file longer than the ring (depth + lanes * batch + 2 slots) through a 2-lane engine: every frame once, in
    order, with the latency mode's results; the consumer pauses so that the reader fills the ring and lanes run
    batches across its end."""
    from edgecls.runtime import Classifier
    from edgecls.runtime.stream import parse_source, stream_frames

    bundle = _bundle(which, request)
    video = make_video(tmp_path / "in.mp4", frames=45)
    with Classifier(bundle["root"], backend=which, mode="throughput", threads=2) as thr, \
            Classifier(bundle["root"], backend=which) as lat:
        results = []
        for res in stream_frames(thr, parse_source(source=str(video)), max_batch=3):
            results.append((res.index, res.prediction.probs, res.frame.copy()))
            if res.index % 9 == 0:
                time.sleep(0.15)
        assert [i for i, _, _ in results] == list(range(45))
        direct = lat.predict_batch([frame for _, _, frame in results])
        for (_, probs, _), ref in zip(results, direct):
            np.testing.assert_allclose(probs, ref.probs, atol=1e-5)
        capped = list(stream_frames(thr, parse_source(source=str(video)), max_batch=4, max_frames=7))
        assert [r.index for r in capped] == list(range(7))


@pytest.mark.parametrize("which", ["onnxruntime", "openvino"])
def test_predict_files_on_lanes_in_order_with_error_rows(which, request, image_dir):
    from edgecls.runtime import Classifier
    from edgecls.runtime.files import collect_images, predict_files

    bundle = _bundle(which, request)
    paths = collect_images([image_dir])
    with Classifier(bundle["root"], backend=which, mode="throughput", threads=2) as thr, \
            Classifier(bundle["root"], backend=which) as lat:
        rows = list(predict_files(thr, paths, batch=2, workers=2))
        assert [r.source for r in rows] == paths
        assert [r.ok for r in rows] == [not p.endswith("img04.jpg") for p in paths]
        good = [p for p in paths if not p.endswith("img04.jpg")]
        for row, ref in zip([r for r in rows if r.ok], lat.predict_batch(good)):
            np.testing.assert_allclose(row.probs, ref.probs, atol=1e-5)
            assert row.labels == ref.labels
