"""`edgecls bench` on a real bundle of a tiny trained model: the real exporter, the real engines, real PyTorch rows.

One bundle (onnx, onnx-int8 and, with openvino installed, the OpenVINO IRs) is exported once per module; most tests
benchmark it in-process with few iterations so the module stays within a minute or two on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.bench import BenchConfig, BenchResult, BenchRow, check_targets, load_targets, run
from edgecls.bench._machine import Machine, measure_gemm_gflops, peak_estimate
from edgecls.errors import ConfigError, DataError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
TARGETS = REPO / "benchmarks" / "targets.yaml"  # the committed targets: the tests that judge verdicts use them
FAST = dict(warmup=1, iters=5, min_seconds=0.0, max_seconds=0.5, batch=(1, 4), threads=1, modes=("latency",))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_config):
    """(bundle, data, checkpoint) of a two-epoch tiny model exported to onnx, onnx-int8 (+ OpenVINO)."""
    from edgecls._deps import has
    from edgecls.export import ExportConfig, export
    from edgecls.synth import generate_synthetic
    from edgecls.train.loop import fit

    root = tmp_path_factory.mktemp("bench")
    data = root / "data"
    generate_synthetic(data, n=48, img_size=64, seed=1)
    result = fit(tiny_config(data, root / "run", epochs=2))
    targets = ("onnx", "onnx-int8") + (("openvino", "openvino-int8") if has("openvino") else ())
    out = root / "bundle"
    export(ExportConfig(checkpoint=str(result.best_checkpoint), targets=targets, data=str(data), out=str(out),
                        allow_parity_failure=True, calib_size=16))
    return out, data, result.best_checkpoint


@pytest.fixture(scope="module")
def tiny_config():
    from edgecls.config import build_config
    from edgecls.train.config import TrainConfig

    def make(data: Path, out: Path, **extra):
        base = dict(data=str(data), out=str(out), backbone="timm:test_efficientnet", pretrained=False, img_size=64,
                    epochs=2, batch_size=16, workers=0, progress=False, lr=3e-3, amp=False, strategy="finetune")
        return build_config(TrainConfig, overrides={**base, **extra})

    return make


@pytest.fixture(scope="module")
def measured(exported) -> BenchResult:
    bundle, data, _ = exported
    return run(BenchConfig(bundle=str(bundle), data=str(data), torch_variants=("eager", "channels_last"),
                           isolate=False, **FAST))


# ---------------------------------------------------------------------------------------------------------------------
# rows, accuracy and the figures around them


def test_every_artifact_and_backend_that_runs_here_gets_a_row(measured, exported):
    from edgecls._deps import has
    from edgecls.manifest import Manifest

    manifest = Manifest.load(exported[0])
    labels = [r.label for r in measured.rows]
    assert labels[:2] == ["pytorch eager fp32", "pytorch channels-last fp32"]
    assert "onnx · onnxruntime cpu f32" in labels and "onnx-int8 · onnxruntime cpu int8" in labels
    if has("openvino"):
        # OpenVINO runs its IRs and the ONNX files too
        assert {"openvino · openvino cpu f32", "openvino-int8 · openvino cpu int8", "onnx · openvino cpu f32"} <= \
            set(labels)
    assert {r.artifact for r in measured.rows} == {"pytorch"} | {a.name for a in manifest.artifacts}
    for r in measured.rows:
        assert r.ok, r.error
        assert r.latency_ms["p50"] <= r.latency_ms["p90"] <= r.latency_ms["p99"]
        assert set(r.throughput) == {1, 4} and all(v > 0 for v in r.throughput.values())
        assert r.load_seconds > 0 and r.size_mb > 0
    assert any("tensorrt" in row for row, _ in measured.not_run)  # no TensorRT here: said, not silently dropped


def test_accuracy_columns_equal_the_exports_own_parity_figures(measured, exported):
    """The bench scores the same valid split through the same engines: its mAP must equal what export measured."""
    from edgecls.manifest import Manifest

    manifest = Manifest.load(exported[0])
    by_label = {r.label: r for r in measured.rows}
    assert by_label["pytorch eager fp32"].map == pytest.approx(manifest.metrics["map"], abs=1e-4)
    assert by_label["pytorch channels-last fp32"].map == pytest.approx(manifest.metrics["map"], abs=1e-4)
    onnx = manifest.artifact("onnx")
    assert by_label["onnx · onnxruntime cpu f32"].map == pytest.approx(onnx.parity["map_artifact"], abs=1e-4)
    int8 = manifest.artifact("onnx-int8")
    assert by_label["onnx-int8 · onnxruntime cpu int8"].map == pytest.approx(int8.parity["map_artifact"], abs=1e-4)
    assert measured.data["images"] == manifest.metrics["num_samples"]


def test_speedup_gops_and_peak_fraction_are_derived_from_the_measurements(measured):
    eager = measured.rows[0]
    assert eager.speedup == 1.0
    assert measured.macs and measured.macs > 1e5
    for r in measured.rows:
        assert r.speedup == pytest.approx(eager.p50 / r.p50, rel=0.01)
        gops = 2 * measured.macs * max(r.throughput.values()) / 1e9
        assert r.gops == pytest.approx(gops, rel=0.01)
        # OpenVINO float IRs get a bf16 row on CPUs with AVX512-BF16/AMX; it is bounded by the BF16 peak
        bound = {"int8": measured.peak.int8_gops, "bf16": measured.peak.bf16_gflops}.get(r.precision,
                                                                                         measured.peak.fp32_gflops)
        assert r.peak_fraction == pytest.approx(r.gops / bound, rel=0.01)


def test_table_markdown_json_and_plot(measured, tmp_path):
    text = measured.table()
    assert "p50 ms" in text and "img/s b4" in text and "targets:" in text and "peak estimate" in text
    assert measured.machine.cpu in text and "load average (1 min) before/after" in text
    share = measured.cpu_share
    assert share is not None and "CPU time during the rows" in text and "other processes" in text
    assert 0 < share.own <= 1 and 0 <= share.others <= 1 and 0 <= share.steal <= 1
    md = measured.markdown()
    assert md.count("\n| ") >= len(measured.rows) + 2
    data = json.loads(json.dumps(measured.to_dict(), default=str))
    assert len(data["rows"]) == len(measured.rows) and data["machine"]["cores"] >= 1
    png = measured.plot(tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isolated_rows_report_their_own_peak_rss(exported):
    bundle, data, _ = exported
    result = run(BenchConfig(bundle=str(bundle), data=str(data), artifacts=("onnx",), backends=("onnxruntime",),
                             torch_variants=(), **FAST))
    (row,) = result.rows
    assert row.ok and row.peak_rss_mb and row.peak_rss_mb > 20
    assert row.info["threads"] == 1


def test_a_row_per_engine_mode_and_the_roofline_beside_the_peak(exported):
    bundle, _, _ = exported
    result = run(BenchConfig(bundle=str(bundle), artifacts=("onnx",), backends=("onnxruntime",), torch_variants=(),
                             isolate=False, **{**FAST, "threads": 2, "modes": ("latency", "throughput")}))
    latency, throughput = result.rows
    assert latency.label + " throughput" == throughput.label
    assert latency.info["mode"] == "latency" and throughput.info["mode"] == "throughput"
    assert throughput.info["streams"] == 2 and latency.info["streams"] == 1
    for row in result.rows:
        assert row.ok and row.roofline_ips and row.roofline_ips > 0 and row.roofline_bound in ("compute", "memory")
        assert row.roofline_fraction == pytest.approx(max(row.throughput.values()) / row.roofline_ips, rel=1e-3)
    assert result.bandwidth["dram_gbs"] > 0 and result.rooflines
    text = result.table()
    assert "% roof" in text and "triad" in text and "roofline f32 b" in text
    with pytest.raises(ConfigError, match="unknown engine mode 'fast'"):
        BenchConfig(bundle=str(bundle), modes=("fast",))


def test_rounds_are_interleaved_and_reported_as_medians(exported):
    bundle, data, _ = exported
    result = run(BenchConfig(bundle=str(bundle), data=str(data), backends=("onnxruntime",), torch_variants=(),
                             isolate=False, rounds=3, **{**FAST, "iters": 5}))
    assert [r.label for r in result.rows] == ["onnx · onnxruntime cpu f32", "onnx-int8 · onnxruntime cpu int8"]
    for row in result.rows:
        assert row.ok and row.latency_ms["runs"] == 15 and row.map is not None
    assert "medians of 3 interleaved rounds" in result.table()
    with pytest.raises(ConfigError, match="--rounds"):
        BenchConfig(bundle=str(bundle), rounds=0)


def test_benchmark_runs_without_torch_and_says_so(exported):
    """In an interpreter where torch cannot be imported, the engine rows still run and the PyTorch row is explained."""
    bundle, data, _ = exported
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
from edgecls.bench import BenchConfig, run
r = run(BenchConfig(bundle={str(bundle)!r}, data={str(data)!r}, backends=("onnxruntime", "pytorch"),
                    artifacts=("onnx",), modes=("latency",), isolate=False, warmup=1, iters=3, max_seconds=0.2,
                    batch=(1,)))
print([row.label for row in r.rows], r.not_run, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "['onnx · onnxruntime cpu f32']" in out.stdout and "torch is not installed" in out.stdout
    assert out.stdout.strip().endswith("False")


# ---------------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_options_name_the_valid_choices(exported):
    bundle = str(exported[0])
    with pytest.raises(ConfigError, match="valid: tensorrt, onnxruntime, openvino, coreml, litert, pytorch"):
        BenchConfig(bundle=bundle, backends=("onnxrt",))
    with pytest.raises(ConfigError, match="--batch"):
        BenchConfig(bundle=bundle, batch=(0,))
    with pytest.raises(ConfigError, match="valid: eager, channels_last, compile"):
        BenchConfig(bundle=bundle, torch_variants=("jit",))
    with pytest.raises(ConfigError, match="no 'onnx-fp16' artifact"):
        run(BenchConfig(bundle=bundle, artifacts=("onnx-fp16",), isolate=False, **FAST))
    with pytest.raises(ConfigError, match="no manifest"):
        run(BenchConfig(bundle=str(exported[1]), isolate=False, **FAST))


def test_wrong_dataset_is_refused(exported, tmp_path):
    from edgecls.synth import generate_synthetic

    other = tmp_path / "other"
    generate_synthetic(other, n=12, img_size=32, seed=0)
    labels = other / "labels.csv"
    lines = labels.read_text().splitlines()
    header = lines[0].split(",")
    labels.write_text("\n".join([",".join(header[:-1])] + [",".join(x.split(",")[:-1]) for x in lines[1:]]) + "\n")
    with pytest.raises(DataError, match="differ from the bundle's"):
        run(BenchConfig(bundle=str(exported[0]), data=str(other), isolate=False, **FAST))


def test_checkpoint_lookup(exported, tmp_path):
    bundle, _, ckpt = exported
    moved = shutil.copytree(bundle, tmp_path / "moved")
    export_json = json.loads((moved / "export.json").read_text())
    export_json["checkpoint"] = str(tmp_path / "gone" / "best.pt")
    (moved / "export.json").write_text(json.dumps(export_json))
    result = run(BenchConfig(bundle=str(moved), artifacts=("onnx",), backends=("onnxruntime", "pytorch"),
                             torch_variants=("eager",), isolate=False, **FAST))
    assert [r.backend for r in result.rows] == ["onnxruntime"]
    assert any(row == "pytorch" and "--checkpoint" in why for row, why in result.not_run)
    # an explicit --checkpoint brings the row back; a different checkpoint is refused
    result = run(BenchConfig(bundle=str(moved), artifacts=("onnx",), backends=("pytorch",), checkpoint=str(ckpt),
                             torch_variants=("eager",), isolate=False, **FAST))
    assert [r.label for r in result.rows] == ["pytorch eager fp32"]
    other = tmp_path / "other.pt"
    other.write_bytes(ckpt.read_bytes() + b"x")
    with pytest.raises(ConfigError, match="not the checkpoint this bundle was exported from"):
        run(BenchConfig(bundle=str(moved), checkpoint=str(other), isolate=False, **FAST))


def test_missing_artifact_file_is_reported_not_run(exported, tmp_path):
    bundle = shutil.copytree(exported[0], tmp_path / "broken")
    (bundle / "onnx-int8" / "model.onnx").unlink()
    result = run(BenchConfig(bundle=str(bundle), backends=("onnxruntime",), torch_variants=(), isolate=False, **FAST))
    assert [r.label for r in result.rows] == ["onnx · onnxruntime cpu f32"]
    (why,) = [why for row, why in result.not_run if row == "onnx-int8 on onnxruntime"]
    assert "model.onnx, which is missing" in why and "re-export" in why


def test_cli_writes_json_markdown_and_plot(exported, tmp_path):
    from edgecls.cli import cli

    bundle, data, _ = exported
    args = ["bench", str(bundle), "--data", str(data), "--backends", "onnxruntime", "--torch-variants", "none",
            "--batch", "1,2", "--warmup", "1", "--iters", "3", "--max-seconds", "0.2", "--threads", "1", "--in-process",
            "--modes", "latency",
            "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md"), "--plot", str(tmp_path / "b.png")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "onnx · onnxruntime cpu f32" in res.output and "img/s b2" in res.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["label"] for r in doc["rows"]] == ["onnx · onnxruntime cpu f32", "onnx-int8 · onnxruntime cpu int8"]
    assert (tmp_path / "b.md").read_text().startswith("- bundle:")
    assert (tmp_path / "b.png").stat().st_size > 1000
    bad = CliRunner().invoke(cli, ["bench", str(bundle), "--batch", "1,x"])
    assert bad.exit_code == 1 and "--batch takes comma-separated batch sizes" in bad.output

    # --baseline: the same run compared with a stored copy whose int8 row was twice as fast and scored other mAP
    stored = json.loads((tmp_path / "b.json").read_text())
    stored["rows"][1]["latency_ms"]["p50"] /= 2
    stored["rows"][1]["map"] += 0.05
    (tmp_path / "old.json").write_text(json.dumps(stored))
    res = CliRunner().invoke(cli, args[:-6] + ["--baseline", str(tmp_path / "old.json"), "--tolerance", "10"])
    assert res.exit_code == 1, res.output
    assert f"against {tmp_path / 'old.json'}" in res.output and "DIFFERS: 1 ok, 1 accuracy" in res.output
    for flag, value, expected in [("--baseline", str(tmp_path / "b.png"), "not JSON"),
                                  ("--baseline", str(tmp_path / "b.md.missing"), "cannot read it"),
                                  ("--tolerance", "0", "--tolerance must be positive")]:
        extra = ["--baseline", str(tmp_path / "old.json")] if flag == "--tolerance" else []
        bad = CliRunner().invoke(cli, [*args[:-6], *extra, flag, value])
        assert bad.exit_code == 1 and expected in bad.output and "Traceback" not in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------------------------
# peak estimate, multiply-add count and the targets


def _machine(**kw) -> Machine:
    base = dict(cpu="test", vendor="AuthenticAMD", arch="x86_64", family="25", cores=2, ghz=3.5, ghz_source="",
                isa=("avx2", "fma"), os="Linux", python="3.11")
    return Machine(**{**base, **kw})


def test_peak_estimate_follows_the_isa():
    zen3 = peak_estimate(_machine())
    assert (zen3.fp32_gflops, zen3.bf16_gflops, zen3.int8_gops) == (224.0, None, 448.0)
    zen4 = peak_estimate(_machine(isa=("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16")))
    assert (zen4.fp32_gflops, zen4.bf16_gflops, zen4.int8_gops) == (224.0, 448.0, 896.0)  # probe: 227/450/900
    xeon = peak_estimate(_machine(vendor="GenuineIntel", family="6", isa=("avx2", "fma", "avx512f", "avx512_vnni")))
    assert (xeon.fp32_gflops, xeon.int8_gops) == (448.0, 1792.0)
    assert "2 cores x 3.50 GHz" in xeon.assumption and "VNNI" in xeon.assumption
    assert peak_estimate(_machine(), cores=1).fp32_gflops == 112.0
    assert measure_gemm_gflops(size=256, seconds=0.05) > 0.1


def test_machine_kind_names_the_kinds_results_are_kept_apart_by():
    assert _machine().kind == "zen3"
    assert _machine(isa=("avx2", "fma", "avx512f", "avx512_vnni")).kind == "zen4"
    assert _machine(family="26", isa=("avx2", "fma", "avx512f", "avx512_vnni")).kind == "zen5"
    assert _machine(vendor="GenuineIntel", family="6", isa=("avx512f", "amx_int8")).kind == "xeon-amx"
    assert _machine(vendor="ARM", arch="aarch64", family="", isa=("asimd",)).kind == "aarch64"


def test_count_macs_on_a_known_network(tmp_path):
    import torch

    from edgecls.bench._flops import count_macs

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 5))
    path = tmp_path / "net.onnx"
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 16, 16), str(path), input_names=["images"],
                      dynamic_axes={"images": {0: "batch"}}, opset_version=17, dynamo=False)
    expected = 16 * 16 * 8 * 3 * 9 + 16 * 16 * 8 * 9 + 8 * 5
    assert count_macs(path) == expected


def _row(label: str, backend: str, precision: str, p50: float, thr: dict[int, float], *, parity=True, variant=""):
    return BenchRow(label, label.split(" ")[0], backend, "CPU", precision, variant=variant, latency_ms={"p50": p50},
                    throughput=thr, parity_passed=parity if backend != "pytorch" else None, gops=1.0)


def test_targets_judge_ratios_and_flag_int8_slower_than_float(measured):
    from dataclasses import replace

    rows = [
        _row("pytorch eager", "pytorch", "f32", 40.0, {1: 25, 8: 30}, variant="eager"),
        _row("pytorch channels-last", "pytorch", "f32", 20.0, {1: 50, 8: 70}, variant="channels_last"),
        _row("onnx ort", "onnxruntime", "f32", 6.0, {1: 160, 8: 200}),
        _row("onnx-int8 ort", "onnxruntime", "int8", 8.0, {1: 120, 8: 110}),
        _row("openvino ov", "openvino", "f32", 7.0, {1: 140, 8: 180}),
        _row("openvino-int8 ov", "openvino", "int8", 3.0, {1: 330, 8: 500}),
        _row("broken", "openvino", "int8", 1.0, {1: 900, 8: 990}, parity=False),
    ]
    fake = replace(measured, rows=rows, macs=int(0.4e9), config=BenchConfig(bundle=str(measured.bundle), batch=(1, 8)))
    checks = {c.name: c for c in check_targets(fake, load_targets(TARGETS))}
    eager = checks["fastest artifact within its parity budget vs PyTorch eager FP32"]
    assert eager.value == pytest.approx(40 / 3, rel=0.01) and eager.passed  # the 1 ms row broke parity: not counted
    best = checks["fastest artifact within its parity budget vs the best PyTorch setting"]
    assert best.value == pytest.approx(20 / 3, rel=0.01) and best.passed
    assert checks["OpenVINO INT8 vs OpenVINO f32 (CPU)"].value == pytest.approx(7 / 3, rel=0.01)
    ort = checks["ONNX Runtime INT8 vs ONNX Runtime FP32 (CPU)"]
    assert ort.passed is False and "slower than the float model" in ort.detail
    batch = checks["throughput at batch >= 8 beats batch 1 per image"]
    assert batch.passed is False and "onnx-int8 ort" in batch.detail
    int8 = checks["INT8 at batch >= 8 vs the CPU's INT8 peak estimate"]
    assert int8.value == pytest.approx(100 * 2 * 0.4 * 990 / fake.peak.int8_gops, rel=0.01)


def test_the_thresholds_and_names_come_from_the_targets_file(measured, tmp_path):
    """The same numbers judged against another file: its names, its thresholds, only its entries, in its order."""
    from dataclasses import replace

    rows = [
        _row("pytorch eager", "pytorch", "f32", 40.0, {1: 25, 8: 30}, variant="eager"),
        _row("onnx ort", "onnxruntime", "f32", 6.0, {1: 160, 8: 200}),
        _row("onnx-int8 ort", "onnxruntime", "int8", 3.0, {1: 330, 8: 400}),
    ]
    fake = replace(measured, rows=rows, macs=int(0.4e9), config=BenchConfig(bundle=str(measured.bundle), batch=(1, 8)))
    path = tmp_path / "strict.yaml"
    path.write_text("targets:\n"
                    "  - {name: int8 twice as fast, kind: engine_ratio, min: 2.5,\n"
                    "     fast: {backend: onnxruntime, precision: int8},\n"
                    "     slow: {backend: onnxruntime, precision: f32}}\n"
                    "  - {name: a hundred times eager, kind: speedup_vs_pytorch, min: 100}\n", encoding="utf-8")
    checks = check_targets(fake, load_targets(path))
    assert [c.name for c in checks] == ["int8 twice as fast", "a hundred times eager"]
    assert checks[0].value == 2.0 and checks[0].passed is False and checks[0].target == ">= 2.5x"
    assert checks[1].value == pytest.approx(40 / 3, rel=0.01) and checks[1].passed is False  # 13x: PASS at 10x
    assert check_targets(fake, ()) == []


def test_the_committed_targets_file_reproduces_the_published_verdicts(measured):
    """benchmarks/targets.yaml judged on the rows of benchmarks/results/backends-*.json gives the verdicts stored in
    those files (judged by the targets the library hard-coded before they moved into that file)."""
    import dataclasses

    from edgecls.bench import Peak

    row_fields = {f.name for f in dataclasses.fields(BenchRow)}
    peak_fields = {f.name for f in dataclasses.fields(Peak)}
    published = sorted((REPO / "benchmarks" / "results").glob("backends-*.json"))
    assert published
    for path in published:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = [BenchRow(**{**{k: v for k, v in r.items() if k in row_fields},
                            "throughput": {int(b): v for b, v in r["throughput"].items()},
                            "p50_rounds": tuple(r.get("p50_rounds", ()))}) for r in doc["rows"]]
        config = BenchConfig(bundle=str(measured.bundle), batch=tuple(doc["config"]["batch"]),
                             max_busy=doc["config"].get("max_busy", 0.1), targets=str(TARGETS))
        result = dataclasses.replace(measured, rows=rows, macs=doc["macs_per_image"], config=config,
                                     peak=Peak(**{k: v for k, v in doc["peak"].items() if k in peak_fields}))
        got = [(c.name, c.target, c.value, c.passed) for c in check_targets(result, load_targets(TARGETS))]
        assert got == [(c["name"], c["target"], c["value"], c["passed"]) for c in doc["checks"]], path.name


def test_without_a_targets_file_the_bench_judges_nothing(measured):
    assert measured.config.targets is None and measured.checks == []
    assert "targets:\n  none judged: no --targets file given (the bench only reports the rows)" in measured.table()
    assert "| none judged: no --targets file given (the bench only reports the rows) | - | - | - | - |\n" in \
        measured.markdown()
    assert json.loads(json.dumps(measured.to_dict(), default=str))["checks"] == []


@pytest.mark.parametrize("text, expected", [
    ("targets:\n  - {name: fast, kind: speedup_vs_torch, min: 10}\n",
     "target 1 ('fast'): unknown kind 'speedup_vs_torch'; valid: speedup_vs_pytorch, "),
    ("targets:\n  - {name: ok, kind: batching}\n  - {name: fast, kind: speedup_vs_pytorch, mn: 10}\n",
     "target 2 ('fast'): speedup_vs_pytorch: unknown key 'mn' (did you mean 'min'?); valid: name, kind, min, variant"),
    ("targets:\n  - {name: fast, kind: speedup_vs_pytorch, min: ten}\n",
     "target 1 ('fast'): min must be a positive number, got 'ten'"),
    ("targets:\n  - {name: fast, kind: speedup_vs_pytorch, min: 10, variant: eagr}\n",
     "target 1 ('fast'): unknown variant 'eagr'; valid: eager, channels_last, compile"),
    ("targets:\n  - {name: share, kind: peak_share, min: 40}\n",
     "target 1 ('share'): min of a peak_share is a share of the peak (0.4 = 40%), got 40"),
    ("targets:\n  - {name: ov, kind: engine_ratio, min: 2, fast: {backend: openvino, precision: int4},"
     " slow: {backend: openvino, precision: f32}}\n",
     "target 1 ('ov'): fast: unknown precision 'int4'; valid: int8, f32, f16, bf16, float"),
    ("targets:\n  - {name: ov, kind: engine_ratio, min: 2}\n", "target 1 ('ov'): engine_ratio needs fast, slow"),
    ("targets:\n  - {kind: batching}\n", "target 1: name is required"),
    ("targets:\n  - {name: b, kind: batching}\n  - {name: b, kind: batching}\n",
     "target 2 ('b'): a second target with this name"),
    ("target:\n  - {name: b, kind: batching}\n", "expected a mapping with a 'targets:' list"),
    ("targets: [\n  {name: b, kind: batching\n", "not valid YAML at line"),
])
def test_a_bad_targets_file_is_one_line_naming_the_file_and_the_entry(tmp_path, text, expected):
    path = tmp_path / "targets.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert str(info.value).startswith(f"--targets {path}: ") and expected in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_cli_bench_reads_the_targets_file_before_it_measures(tmp_path):
    from edgecls.cli import cli

    bad = tmp_path / "targets.yaml"
    bad.write_text("targets:\n  - {name: fast, kind: speedup, min: 10}\n", encoding="utf-8")
    not_a_bundle = tmp_path / "empty"
    not_a_bundle.mkdir()
    for path, expected in ((bad, f"Error: --targets {bad}: target 1 ('fast'): unknown kind 'speedup'; valid: "),
                           (tmp_path / "gone.yaml", f"Error: --targets {tmp_path / 'gone.yaml'}: cannot read it")):
        res = CliRunner().invoke(cli, ["bench", str(not_a_bundle), "--targets", str(path)])
        assert res.exit_code == 1 and res.output.startswith(expected) and res.output.count("\n") == 1, res.output


def test_cli_bench_with_the_committed_targets_judges_them(exported, tmp_path):
    from edgecls.cli import cli

    fast = ["--iters", "2", "--warmup", "1", "--min-seconds", "0", "--max-seconds", "0.2", "--batch", "1,8",
            "--threads", "1", "--backends", "onnxruntime", "--torch-variants", "none", "--in-process"]
    res = CliRunner().invoke(cli, ["bench", str(exported[0]), *fast, "--targets", str(TARGETS), "--json",
                                   str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    names = [t.name for t in load_targets(TARGETS)]
    assert f"] {names[3]}: " in res.output and f"] {names[-1]}: " in res.output  # ORT INT8 vs FP32, batching
    assert "no --targets file" not in res.output
    stored = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))
    assert stored["config"]["targets"] == str(TARGETS) and [c["name"] for c in stored["checks"]] == names


def test_cli_help_lists_the_options():
    from edgecls.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0
    for flag in ("--data", "--split", "--backends", "--batch", "--warmup", "--iters", "--threads", "--json", "--md",
                 "--plot", "--torch-variants", "--targets"):
        assert flag in res.output


def test_a_row_faster_than_the_peak_raises_the_clock():
    """A VM reports its base clock; a row that beats the estimate proves the cores boost, and the peak follows."""
    from edgecls.bench.runner import _with_derived

    peak = peak_estimate(_machine(isa=("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"), family="26", ghz=2.6))
    assert (peak.fp32_gflops, peak.int8_gops) == (332.8, 1331.2)
    macs = int(1e9)
    rows = [_row("f32 row", "openvino", "f32", 5.0, {1: 200.0}),  # 400 GFLOP/s: needs 3.125 GHz
            _row("int8 row", "openvino", "int8", 2.0, {1: 600.0})]  # 1200 GOP/s: fits 2.6 GHz
    out, lifted = _with_derived(rows, macs, peak, None, 0.01)
    assert lifted.ghz == pytest.approx(3.125) and lifted.fp32_gflops == pytest.approx(400.0)
    assert lifted.int8_gops == pytest.approx(1600.0) and "clock raised from 2.60 to 3.12 GHz" in lifted.assumption
    assert "f32 row reached 400 GOP/s" in lifted.assumption
    assert out[0].peak_fraction == pytest.approx(1.0) and out[1].peak_fraction == pytest.approx(0.75)
    same = peak.lifted([("slow", "f32", 100.0)])
    assert same is peak


def test_cpu_meter_tells_the_benchmark_from_other_processes():
    """A busy loop in this process counts as the benchmark's own; one in another process counts as someone else's.
    Checked against the CPU seconds each process really used (getrusage), so that whatever else this machine runs
    meanwhile cannot make it fail or pass."""
    import resource
    import time

    from edgecls.bench._machine import CpuMeter

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    cpus = os.cpu_count() or 1
    meter, wall, cpu = CpuMeter().start(), time.perf_counter(), time.process_time()
    spin(0.6)
    own = meter.stop()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if own is None:
        pytest.skip("no /proc/stat on this OS")
    # this process's share is its CPU seconds over the machine's (10 ms ticks: a few hundredths of slack)
    assert abs(own.own - cpu / (wall * cpus)) < 0.05 + 0.2 * own.own, (own, cpu, wall)

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter, wall = CpuMeter().start(), time.perf_counter()
    busy = "import time\nend = time.time() + 1.2\nwhile time.time() < end: pass"
    other = subprocess.Popen([sys.executable, "-c", busy])
    time.sleep(1.0)
    theirs = meter.stop()
    wall = time.perf_counter() - wall
    other.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)  # its whole 1.2 s life
    assert theirs.own < 0.05, theirs  # this process slept
    # the child's CPU seconds inside the window (at least its share of 1 s of a 1.2 s life) are someone else's
    assert theirs.others * wall * cpus >= 0.7 * child * (1.0 / 1.2) - 0.05, (theirs, child, wall)
    assert child > 0.1, "the busy child never ran"


def _spinners(seconds: float) -> list[subprocess.Popen]:
    """One busy-loop process per CPU, for ``seconds``: load from outside the benchmark."""
    busy = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(os.cpu_count() or 1)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_target_is_not_judged_when_others_took_the_cpu_during_its_rows(measured):
    """The verdict function on a measured busy share: other processes' CPU time while a row ran (CpuMeter, as the
    bench measures every row), above --max-busy (10%), leaves each target comparing that row without a verdict."""
    import time
    from dataclasses import replace

    from edgecls.bench._machine import CpuMeter

    meter = CpuMeter().start()
    procs = _spinners(1.5)
    try:
        time.sleep(1.0)
    finally:
        share = meter.stop()
        _stop(procs)
    if share is None:
        pytest.skip("no /proc/stat on this OS")
    loaded = share.others + share.steal
    assert loaded > 0.10, share
    rows = [
        _row("pytorch eager", "pytorch", "f32", 40.0, {1: 25, 8: 30}, variant="eager"),
        _row("onnx ort", "onnxruntime", "f32", 6.0, {1: 160, 8: 200}),
        _row("onnx-int8 ort", "onnxruntime", "int8", 3.0, {1: 330, 8: 400}),
    ]
    rows = [replace(rows[0], busy=loaded), replace(rows[1], busy=0.02), replace(rows[2], busy=0.0)]
    fake = replace(measured, rows=rows, macs=int(0.4e9), config=BenchConfig(bundle=str(measured.bundle), batch=(1, 8)))
    checks = {c.name: c for c in check_targets(fake, load_targets(TARGETS))}
    eager = checks["fastest artifact within its parity budget vs PyTorch eager FP32"]
    assert eager.passed is None and eager.busy == loaded and eager.value == pytest.approx(40 / 3, rel=0.01)
    assert eager.line().startswith(f"[not judged: machine busy ({100 * loaded:.0f}%)]")
    assert "during pytorch eager (more than --max-busy 10%)" in eager.detail
    ort = checks["ONNX Runtime INT8 vs ONNX Runtime FP32 (CPU)"]  # its two rows ran on a quiet machine
    assert ort.passed is True and ort.busy is None and ort.line().startswith("[PASS]")
    assert checks["throughput at batch >= 8 beats batch 1 per image"].busy == loaded  # compares every row
    lenient = replace(fake, config=BenchConfig(bundle=str(measured.bundle), batch=(1, 8), max_busy=1.0))
    assert {c.name: c for c in check_targets(lenient, load_targets(TARGETS))}[eager.name].passed is True
    with pytest.raises(ConfigError, match="--max-busy is a share of all CPUs"):
        BenchConfig(bundle=str(measured.bundle), max_busy=10)


def test_a_bench_under_load_says_not_judged(exported):
    """A real (tiny) bench with a busy loop on every CPU beside it: every row records the others' share, and the
    targets that compare those rows print "not judged: machine busy (N%)" instead of PASS or MISS. (The batch target
    compares every row whatever its parity, so the tiny model's INT8 accuracy does not decide what is judged.)"""
    from dataclasses import replace

    bundle, data, _ = exported
    procs = _spinners(60)
    try:
        result = run(BenchConfig(bundle=str(bundle), backends=("onnxruntime",), torch_variants=(), isolate=False,
                                 targets=str(TARGETS), **{**FAST, "batch": (1, 8)}))
    finally:
        _stop(procs)
    if any(r.busy is None for r in result.rows):
        pytest.skip("no /proc/stat on this OS")
    assert all(r.busy > 0.10 for r in result.rows), [(r.label, r.busy) for r in result.rows]
    name = "throughput at batch >= 8 beats batch 1 per image"
    batched = next(c for c in result.checks if c.name == name)
    assert batched.passed is None and batched.busy > 0.10 and batched.value is not None
    assert f"[not judged: machine busy ({100 * batched.busy:.0f}%)] {name}" in result.table()
    assert "not judged: machine busy" in result.markdown()
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["busy"] == result.rows[0].busy
    judged = check_targets(replace(result, config=replace(result.config, max_busy=1.0)), load_targets(TARGETS))
    assert next(c for c in judged if c.name == name).passed is not None


def test_machine_info_reads_this_machine():
    from edgecls.bench._machine import machine_info

    m = machine_info()
    assert m.cores >= 1 and m.ghz > 0 and m.cpu
    assert np.isfinite(peak_estimate(m).fp32_gflops)


def test_a_row_whose_map_drop_breaks_the_budget_is_not_within_parity(measured):
    from edgecls.bench.runner import _with_derived

    rows = [
        replace_row(_row("pytorch eager", "pytorch", "f32", 40.0, {1: 25}, variant="eager"), map=0.90),
        replace_row(_row("qdq ort", "onnxruntime", "int8", 8.0, {1: 120}), map=0.80),
        replace_row(_row("int8 ov", "openvino", "int8", 5.0, {1: 200}), map=0.895),
    ]
    out = {r.label: r for r in _with_derived(rows, None, measured.peak, None, 0.01)[0]}
    assert out["qdq ort"].map_drop == pytest.approx(0.10) and out["qdq ort"].parity_passed is False
    assert out["int8 ov"].map_drop == pytest.approx(0.005) and out["int8 ov"].parity_passed is True
    assert out["pytorch eager"].parity_passed is None


def replace_row(row: BenchRow, **kw) -> BenchRow:
    from dataclasses import replace

    return replace(row, **kw)


# ---------------------------------------------------------------------------------------------------------------------
# --baseline: a run against a stored one


def test_compare_with_a_baseline_judges_speed_accuracy_and_machine(measured):
    import copy

    from edgecls.bench import compare

    run_ = json.loads(json.dumps(measured.to_dict(), default=str))
    same = compare(run_, copy.deepcopy(run_), baseline="b.json")
    assert same.passed and same.speed_judged and {r.status for r in same.rows} == {"ok"}
    assert all(r.p50_ratio == 1.0 and set(r.time_ratios.values()) == {1.0} for r in same.rows)

    old = copy.deepcopy(run_)
    labels = [r["label"] for r in old["rows"]]
    old["rows"][0]["latency_ms"]["p50"] /= 1.5  # this run is 1.5x slower at batch 1 than the baseline
    old["rows"][1]["throughput"]["4"] *= 0.5  # ... and twice as fast at batch 4
    old["rows"][2]["map"] -= 0.01
    old["rows"][3]["parity_passed"] = not old["rows"][3]["parity_passed"]
    old["rows"].append({**old["rows"][0], "label": "gone"})
    del run_["rows"][-1]  # measured in the baseline only
    result = compare(run_, old, baseline="b.json", tolerance=0.25)
    status = {r.label: r for r in result.rows}
    assert status[labels[0]].status == "slower" and status[labels[0]].p50_ratio == pytest.approx(1.5, rel=1e-3)
    assert status[labels[1]].status == "faster" and status[labels[1]].time_ratios[4] == pytest.approx(0.5, rel=1e-3)
    assert status[labels[2]].status == "accuracy" and status[labels[2]].map_delta == pytest.approx(0.01, abs=1e-4)
    assert status[labels[3]].status == "accuracy" and "parity" in status[labels[3]].detail
    assert status["gone"].status == "missing" and status[labels[-1]].status == "missing"
    assert not result.passed and {r.label for r in result.failures} == {labels[0], labels[2], labels[3], "gone",
                                                                          labels[-1]}
    text = result.table()
    assert "DIFFERS" in text and "SLOWER" in text and "p50 x" in text and "t/img b4 x" in text
    assert "refresh the baseline" in status[labels[1]].detail
    assert compare(run_, old, tolerance=0.6).rows[0].status == "ok"  # 1.5x is within a 60% tolerance

    other = copy.deepcopy(old)
    other["machine"]["cpu"] = "another CPU"
    judged = compare(run_, other)
    assert not judged.speed_judged and "speed not judged" in judged.machine_note
    assert {r.label: r.status for r in judged.rows}[labels[0]] == "ok"  # 1.5x slower, but on another machine
    with pytest.raises(ConfigError, match="--tolerance must be positive"):
        compare(run_, old, tolerance=0)
