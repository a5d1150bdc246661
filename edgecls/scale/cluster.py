"""Connecting to Ray, and how many workers a job gets with how many CPUs each.

The CPU request of a worker is what Ray schedules by, not a limit on its threads. A pool whose requests take every
CPU leaves none for Ray Data's read tasks, and the job stalls (ray 2.58 on 2 cores: 2 workers x 1 CPU, the read stage
backpressured forever). So the workers' requests together leave :data:`RESERVE_PER_NODE` CPUs per node free; with
read tasks asking :data:`READ_CPUS` each, at least one node then always has room for a read (the free CPUs of the
cluster, at least half a CPU per node, cannot all be split into pieces smaller than a read's request).
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edgecls._deps import require
from edgecls.errors import ConfigError

log = logging.getLogger("edgecls.scale")

READ_CPUS = 0.25  # CPU request of one read task (reading bytes is I/O; this only bounds how many run at once)
RESERVE_PER_NODE = 0.5  # CPUs per node that the workers' requests leave for read tasks
MIN_WORKER_CPUS = 0.05
CONNECT_TIMEOUT_S = 5.0


def ray_module() -> Any:
    return require("ray", extra="ray")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` at once when ``HOST:PORT`` or ``ray://HOST:PORT`` does not accept a connection
    (``ray.init`` would retry for a minute or more before it says so)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigError(f"--address {address!r}: give auto, HOST:PORT or ray://HOST:10001")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(f"--address {address}: cannot reach the Ray cluster at {host}:{port} ({reason}); is its "
                          "head running and the port open?") from None


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: start a local Ray on this machine's CPUs; already connected: keep
    that one). Returns True when this call started or joined Ray (so the job should shut it down at the end)."""
    ray = ray_module()
    if address not in (None, "auto"):
        check_reachable(address)
    if ray.is_initialized():
        current = _current_address(ray)
        if address not in (None, "auto") and current is not None and address.split("://")[-1] != current:
            raise ConfigError(f"--address {address}: this process is already connected to the Ray cluster at "
                              f"{current}; one process joins one cluster")
        return False
    try:
        if address is None:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        hint = "; start one with `ray start --head` or leave --address out for a local Ray" if address == "auto" else ""
        raise ConfigError(f"--address {address}: {str(exc).strip().splitlines()[0]}{hint}") from None
    except Exception as exc:
        raise ConfigError(f"--address {address or '(local)'}: Ray did not start ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    return True


def _current_address(ray: Any) -> str | None:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return None


@dataclass(frozen=True)
class WorkerPlan:
    """The actor pool of a job: ``min_workers``..``max_workers`` actors, each asking Ray for ``cpus`` CPUs and running
    ``threads`` threads; ``cluster_cpus`` on ``nodes`` nodes when it was planned."""

    min_workers: int
    max_workers: int
    cpus: float
    threads: int
    cluster_cpus: float
    nodes: int

    def describe(self) -> str:
        pool = str(self.max_workers) if self.min_workers == self.max_workers else \
            f"{self.min_workers}..{self.max_workers}"
        return (f"{pool} worker(s) x {self.threads} thread(s), {self.cpus:g} CPU requested each, on {self.nodes} "
                f"node(s) with {self.cluster_cpus:g} CPUs")


def plan_workers(workers: tuple[int, int] | None, threads: int, *, cluster_cpus: float, nodes: int) -> WorkerPlan:
    """Size the pool so that the workers' CPU requests leave :data:`RESERVE_PER_NODE` CPUs per node for reads.

    ``workers`` None: as many workers as ``cluster_cpus / threads`` (at least one). A worker asks for ``threads``
    CPUs, or less when that much would not leave the reserve; a pool too large for the cluster even at
    :data:`MIN_WORKER_CPUS` each is a :class:`ConfigError`.
    """
    if cluster_cpus <= 0 or nodes < 1:
        raise ConfigError("the Ray cluster has no CPUs to run workers on")
    if workers is None:
        count = max(1, int(cluster_cpus // threads))
        workers = (count, count)
    low, high = workers
    room = cluster_cpus - RESERVE_PER_NODE * nodes
    share = room / high
    if share < MIN_WORKER_CPUS:
        raise ConfigError(f"--workers {high}: too many for a cluster of {cluster_cpus:g} CPUs on {nodes} node(s) (each "
                          f"would get under {MIN_WORKER_CPUS} CPU after {RESERVE_PER_NODE} per node for reading); "
                          f"give at most {max(1, int(room / MIN_WORKER_CPUS))}")
    cpus = math.floor(min(float(threads), share) * 1000) / 1000  # rounded down: the reserve stays whole
    return WorkerPlan(low, high, cpus, threads, cluster_cpus, nodes)


def cluster_size() -> tuple[float, int]:
    """(CPUs, nodes with CPUs) of the connected Ray cluster, alive nodes only."""
    ray = ray_module()
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    return float(sum(n["Resources"]["CPU"] for n in nodes)), len(nodes)
