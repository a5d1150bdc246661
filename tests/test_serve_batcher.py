"""The DynamicBatcher driven directly, on a tiny real ONNX Runtime engine: gathering, splitting at max_batch, the
bounded queue, timeouts, stop, engine errors. A batch forms deterministically while the test holds an announcement
(a request "on its way"), which is what keeps the batcher waiting."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import IMG, build_bundle, reference_input

from edgecls.metrics import sigmoid


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from edgecls.runtime import open_backend

    root = build_bundle(tmp_path_factory.mktemp("batcher") / "bundle", openvino=False)["root"]
    with open_backend(root / "onnx/model.onnx", backend="onnxruntime", precision_hint="fp32") as backend:
        yield backend


@pytest.fixture
def make(engine):
    from edgecls.serve import DynamicBatcher

    made = []

    def build(**kw):
        seen = []
        lock = threading.Lock()

        def on_batch(stats):
            with lock:
                seen.append(stats)

        b = DynamicBatcher(engine.infer, num_classes=3, on_batch=on_batch, **{"max_wait_ms": 60_000, **kw})
        made.append(b)
        return b, seen

    yield build
    for b in made:
        b.stop()


def test_requests_announced_meanwhile_join_one_engine_call(make, engine):
    batcher, seen = make(max_batch=8)
    x = reference_input(5)
    with batcher.announce():  # one more request on its way: the batch waits for it
        futures = [batcher.submit(img) for img in x]
        assert batcher.depth == 5 and not any(f.done() for f in futures)
    rows = np.stack([f.result(timeout=30) for f in futures])
    assert [s.size for s in seen] == [5] and seen[0].requests == 5
    np.testing.assert_allclose(rows, sigmoid(engine.infer(x)), atol=1e-6)
    assert rows.shape == (5, 3)


def test_a_full_batch_runs_at_max_batch_and_the_rest_follows(make):
    batcher, seen = make(max_batch=2)
    with batcher.announce():
        futures = [batcher.submit(img) for img in reference_input(5)]
    for f in futures:
        f.result(timeout=30)
    assert sorted(s.size for s in seen) == [1, 2, 2] and sum(s.size for s in seen) == 5


def test_a_lone_request_does_not_wait(make):
    batcher, seen = make(max_batch=8)  # max_wait 60 s: only a request on its way would make it wait
    assert batcher.submit(reference_input(1)[0]).result(timeout=20).shape == (3,)
    assert [s.size for s in seen] == [1]


def test_batches_logits_and_an_item_larger_than_max_batch(make, engine):
    batcher, seen = make(max_batch=4)
    x = reference_input(6)
    logits = batcher.submit(x, logits=True).result(timeout=30)
    np.testing.assert_allclose(logits, engine.infer(x), atol=1e-5)
    assert [s.size for s in seen] == [6]  # one request's batch is never split
    np.testing.assert_allclose(batcher.infer(x[:2], timeout=30), sigmoid(engine.infer(x[:2])), atol=1e-6)


def test_queue_full_then_room_again(make):
    from edgecls.serve import QueueFull

    batcher, _ = make(max_batch=8, max_queue=2)
    x = reference_input(3)
    with batcher.announce():
        first = [batcher.submit(x[0]), batcher.submit(x[1])]
        with pytest.raises(QueueFull, match="--max-queue 2"):
            batcher.submit(x[2])
    for f in first:
        f.result(timeout=30)
    batcher.submit(x[2]).result(timeout=30)


def test_infer_timeout_drops_the_request(make):
    from edgecls.serve import InferenceTimeout

    batcher, seen = make(max_batch=8)
    with batcher.announce():
        with pytest.raises(InferenceTimeout, match="within 0.2 s"):
            batcher.infer(reference_input(2), timeout=0.2)
        assert batcher.depth <= 1
    assert batcher.submit(reference_input(1)[0]).result(timeout=30).shape == (3,)
    assert [s.size for s in seen] == [1]  # the timed-out batch never ran


def test_many_threads_at_once_each_get_their_own_rows(make, engine):
    batcher, seen = make(max_batch=8, max_wait_ms=2)
    x = reference_input(40)
    want = sigmoid(engine.infer(x))
    got: dict[int, np.ndarray] = {}

    def client(i: int) -> None:
        got[i] = batcher.infer(x[i : i + 1], timeout=30)[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.stack([got[i] for i in range(40)]), want, atol=1e-6)
    assert sum(s.size for s in seen) == 40 and max(s.size for s in seen) <= 8


def test_stop_answers_what_is_queued_then_refuses(make):
    from edgecls.serve import BatcherClosed

    batcher, _ = make(max_batch=8)
    with batcher.announce():
        futures = [batcher.submit(img) for img in reference_input(3)]
        batcher.stop()
        assert all(f.result(timeout=30).shape == (3,) for f in futures)
        with pytest.raises(BatcherClosed):
            batcher.submit(reference_input(1)[0])
    assert not batcher.alive


def test_an_engine_error_reaches_the_callers_and_the_thread_goes_on(engine):
    from edgecls.serve import DynamicBatcher

    batcher = DynamicBatcher(engine.infer, num_classes=5, max_batch=4)  # the model gives 3 classes
    try:
        with pytest.raises(RuntimeError, match=r"expected \(1, 5\)"):
            batcher.submit(reference_input(1)[0]).result(timeout=30)
        with pytest.raises(ValueError, match="expected a"):
            batcher.submit(np.zeros((IMG, IMG), np.float32))
        assert batcher.alive
    finally:
        batcher.stop()
