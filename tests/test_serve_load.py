"""`edgecls serve` under generated and sustained traffic: Schemathesis against its /openapi.json (no 5xx), and 2,000
requests at concurrency 32 from an asyncio client against an `edgecls serve` subprocess (no errors but 503s, every
answer right, the server's memory stable). Bounded: well under a minute each on 2 cores."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import serve_bundle
from test_serve import _start_cli_server, bundle, images, readable  # noqa: F401  (module fixtures)

httpx = pytest.importorskip("httpx")


def test_schemathesis_finds_no_server_error(bundle, tmp_path):  # noqa: F811
    pytest.importorskip("schemathesis")
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if st is None:
        pytest.skip("the schemathesis command is not installed (pip install \"edgecls[dev]\")")
    with serve_bundle(bundle, max_files=4) as served:
        out = subprocess.run([st, "run", served.url + "/openapi.json", "--checks", "not_a_server_error",
                              "--max-examples", "5", "--seed", "1", "--no-shrink", "--request-timeout", "30",
                              "--report-dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        assert "generated" in out.stdout and " failed" not in out.stdout.split("SUMMARY")[-1], out.stdout[-3000:]
        assert served.client.get("/readyz").status_code == 200


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _load(url: str, bodies: list[tuple[bytes, str]], n: int, concurrency: int) -> list[tuple[int, int, dict]]:
    """``n`` POST /v1/classify requests, ``concurrency`` at a time: (image index, status, body) of each."""
    out: list[tuple[int, int, dict]] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker() -> None:
            for i in counter:
                data, ctype = bodies[i % len(bodies)]
                r = await client.post("/v1/classify", content=data, headers={"content-type": ctype})
                out.append((i % len(bodies), r.status_code, r.json()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def test_2000_requests_at_concurrency_32_no_errors_memory_stable(bundle, readable):  # noqa: F811
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads the server's memory from /proc (Linux)")
    bodies = [(p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg") for p in readable]
    proc, url = _start_cli_server(bundle, "--max-queue", "16", "--max-batch", "8")
    try:
        expected = {i: httpx.post(url + "/v1/classify", content=d, headers={"content-type": t}).json()
                    for i, (d, t) in enumerate(bodies)}
        asyncio.run(_load(url, bodies, 300, 32))  # warm-up: pools, allocator, connection objects
        before = _rss_mb(proc.pid)
        results = asyncio.run(_load(url, bodies, 2000, 32))
        after = _rss_mb(proc.pid)
        statuses = [s for _, s, _ in results]
        assert len(results) == 2000 and set(statuses) <= {200, 503}, sorted(set(statuses))
        assert statuses.count(200) >= 1000, statuses.count(503)
        for index, status, body in results:
            if status == 200:
                want = expected[index]["probabilities"]
                assert all(abs(body["probabilities"][k] - want[k]) <= 1e-6 for k in want), (index, body)
            else:
                assert "--max-queue 16" in body["error"]
        assert after - before < 40, f"server RSS grew from {before:.0f} MB to {after:.0f} MB over 2,000 requests"
        text = httpx.get(url + "/metrics").text
        assert "edgecls_batch_size_bucket" in text
        assert httpx.get(url + "/readyz").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
