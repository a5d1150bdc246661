"""Millions of images on Ray: the bundle's ``Classifier`` in a pool of Ray Data workers, rows to Parquet, resumable.

The same preprocessing and thresholds as the device (each worker opens :class:`edgecls.runtime.Classifier` once and
decodes with :func:`edgecls.preprocess.preprocess`); needs the ``ray`` extra, never torch::

    from edgecls.scale import ScaleConfig, predict_dataset, run
    ds = predict_dataset("bundle/", ["s3://bucket/photos/"])      # a ray.data.Dataset of result rows
    summary = run("bundle/", ["photos/"], ScaleConfig(out="results/", workers="4"))  # blocks of Parquet, resumable

* :func:`predict_dataset` -> ``ray.data.Dataset`` (columns: :func:`result_columns`), nothing run until consumed.
* :func:`run` -> :class:`JobSummary`: writes ``part-NNNNNN-<digest>.parquet`` blocks (csv, jsonl) under ``out``; a
  rerun skips the complete ones. :class:`Predictor` is the worker.
* :func:`list_inputs` (:mod:`edgecls.scale.sources`): folders, globs, CSV/Parquet listings and URIs as one sorted list.
* :func:`plan_workers` (:mod:`edgecls.scale.cluster`): the pool and each worker's CPU request.
"""

from edgecls.scale.cluster import WorkerPlan, connect, plan_workers
from edgecls.scale.config import ScaleConfig, parse_workers
from edgecls.scale.job import JobSummary, Predictor, predict_dataset, result_columns, run
from edgecls.scale.sources import Inputs, list_inputs

__all__ = [
    "Inputs",
    "JobSummary",
    "Predictor",
    "ScaleConfig",
    "WorkerPlan",
    "connect",
    "list_inputs",
    "parse_workers",
    "plan_workers",
    "predict_dataset",
    "result_columns",
    "run",
]
