"""The `edgecls.cli` package: the only one that knows click, options built from the config dataclasses by one
function, choices read from the registries, and `edgecls --help` without importing the library's packages."""

from __future__ import annotations

import ast
import dataclasses
import enum
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.config import build_config, field

ROOT = Path(__file__).resolve().parents[1]


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], terminal_width=400, max_content_width=400)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # click wraps lines; compare the words


def test_only_the_cli_package_imports_click():
    importers = []
    for path in sorted((ROOT / "edgecls").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "click" or n.startswith("click.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers and all(p.startswith("edgecls/cli/") for p in importers), importers


def test_importing_the_cli_imports_none_of_the_library_packages():
    """`edgecls --help` stays fast: the commands' config options are built when a command needs them."""
    code = ("import sys, edgecls.cli; print(sorted(m for m in sys.modules if m == 'numpy' or m.split('.')[:2] in "
            "[['edgecls', p] for p in ('train', 'export', 'bench', 'runtime', 'data')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_python_dash_m_edgecls_cli_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "edgecls.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "Usage: python -m edgecls.cli" not in out.stdout and "predict" in out.stdout


def test_backend_choices_are_the_runtime_registry():
    from edgecls.runtime.backends import BACKEND_NAMES

    ctx = click.Context(cli)
    for name in ("predict", "run", "doctor"):
        (backend,) = [p for p in cli.commands[name].get_params(ctx) if p.name == "backend"]
        assert tuple(backend.type.choices) == ("auto", *BACKEND_NAMES), name
        assert f"[{'|'.join(('auto', *BACKEND_NAMES))}]" in _help(name)


def test_target_and_bench_backend_help_come_from_the_registries():
    from edgecls.bench import PYTORCH
    from edgecls.export.targets import ALL, list_targets
    from edgecls.runtime.backends import BACKEND_NAMES

    names = [t.name for t in list_targets()]
    assert len(names) >= 8
    assert f"{', '.join(names)}, or {ALL} (every target this machine can produce)" in _help("export")
    assert f"comma-separated: {', '.join((*BACKEND_NAMES, PYTORCH))} [default: all here]" in _help("bench")


@pytest.mark.parametrize("command", ["export", "bench"])
def test_export_and_bench_flags_and_defaults_come_from_their_configs(command):
    """Each flag field of ExportConfig/BenchConfig is one option, and the help shows the dataclass's own default."""
    from edgecls.bench import BenchConfig
    from edgecls.export import ExportConfig

    cls = {"export": ExportConfig, "bench": BenchConfig}[command]
    text = _help(command)
    params = {p.name: p for p in cli.commands[command].get_params(click.Context(cli))}
    flagged = [f for f in dataclasses.fields(cls) if f.metadata["flag"]]
    assert len(flagged) >= 15
    for fld in flagged:
        assert fld.name in params and (params[fld.name].required or params[fld.name].default is None), fld.name
        default = fld.default
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and not fld.metadata["shown"]:
            assert f"{fld.metadata['help']} [default: {default}]" in text, fld.name
    assert "--fp32-tolerance FLOAT FP32 budget: max |delta p| [default: 0.0001]" in _help("export")


def test_bench_and_export_config_errors_are_one_line(tmp_path):
    runner = CliRunner()
    cases = [
        (["bench", str(tmp_path), "--batch", "1,x"], "Error: --batch takes comma-separated batch sizes such as 1,8,32, "
                                                     "got '1,x'"),
        (["bench", str(tmp_path), "--backends", "onnxruntime,nope"], "Error: --backends: unknown backend 'nope'"),
        (["bench", str(tmp_path), "--torch-variants", "eager,fast"], "Error: --torch-variants: unknown variant 'fast'"),
        (["export", str(tmp_path / "x.pt"), "-t", "onnx", "-t", "onx-int8", "--data", "d", "-o", str(tmp_path / "b")],
         "onnx-int8"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and expected in result.output, (args, result.output)
    for flag, given in (("'-t' / '--target'", ["--data", "d", "-o", "b"]), ("'--data'", ["-t", "onnx", "-o", "b"]),
                        ("'-o' / '--out'", ["-t", "onnx", "--data", "d"])):
        result = runner.invoke(cli, ["export", "x.pt", *given])
        assert result.exit_code == 2 and f"Missing option {flag}" in result.output, result.output


class _Mode(str, enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True)
class _Demo:
    name: str = field(help="an argument", flag=False)
    where: str = field(help="where", required=True)
    tags: tuple[str, ...] = field((), help="a tag", cli_name="--tag", short="-t", multiple=True)
    sizes: tuple[int, ...] = field((1, 2), help="sizes")
    mode: _Mode = field(_Mode.FAST, help="mode")
    hint: str = field("a", help="hint", choices=("a", "b"))
    limit: float | None = field(None, help="limit", shown="none")
    dry: bool = field(False, help="dry run", switch=True)
    check: bool = field(True, help="check")


def test_options_from_covers_every_kind_of_field():
    from edgecls.cli.options import ConfigCommand, given, options_from

    seen = []

    @click.command(cls=ConfigCommand, options=lambda: options_from(_Demo, exclude=("name",)))
    @click.argument("name")
    def demo(name: str, **flags: object) -> None:
        seen.append(build_config(_Demo, overrides={"name": name, **given(flags)}))

    runner = CliRunner()
    result = runner.invoke(demo, ["n", "-t", "x", "--tag", "y", "--sizes", "3,4", "--mode", "SLOW", "--hint", "b",
                                  "--limit", "0.5", "--dry", "--no-check", "--where", "w"])
    assert result.exit_code == 0, result.output
    assert seen.pop() == _Demo("n", "w", ("x", "y"), (3, 4), _Mode.SLOW, "b", 0.5, True, False)
    result = runner.invoke(demo, ["n", "--where", "w"])
    assert result.exit_code == 0 and seen.pop() == _Demo("n", where="w"), result.output
    assert runner.invoke(demo, ["n", "--where", "w", "--hint", "c"]).exit_code == 2
    assert runner.invoke(demo, ["n"]).exit_code == 2  # --where is required
    assert runner.invoke(demo, ["n", "--where", "w", "--no-dry"]).exit_code == 2  # a switch has no --no- form
    text = " ".join(runner.invoke(demo, ["--help"]).output.split())
    for expected in ("-t, --tag TEXT a tag", "--sizes TEXT sizes [default: 1,2]", "[default: fast]",
                     "--hint [a|b] hint [default: a]", "limit [default: none]", "--dry dry run",
                     "--check / --no-check check [default: yes]", "[required]"):
        assert expected in text, (expected, text)
    assert re.search(r"-t, --tag TEXT a tag --sizes", text)  # a repeated flag shows no default


def test_bench_reads_a_yaml_config_and_the_flags_override_it(tmp_path):
    """`bench --config` is BenchConfig as YAML, like train's: unknown keys are refused with the closest one, bad values
    name the file, and a flag given overrides the file (here a bad `rounds` in the file, then the empty bundle's
    error once --rounds fixes it)."""
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = tmp_path / "bench.yaml"
    config.write_text("warmpu: 1\n")
    result = runner.invoke(cli, ["bench", str(bundle), "--config", str(config)])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {config}: unknown key 'warmpu'; did you mean 'warmup'? (valid keys: "
        + ", ".join(f.name for f in dataclasses.fields(__import__("edgecls.bench").bench.BenchConfig)) + ")"]
    config.write_text("warmup: 1\nrounds: 0\nbatch: [1, 8]\n")
    result = runner.invoke(cli, ["bench", str(bundle), "--config", str(config)])
    assert result.exit_code == 1 and "Error: --rounds must be an integer >= 1, got 0" in result.output, result.output
    result = runner.invoke(cli, ["bench", str(bundle), "--config", str(config), "--rounds", "2"])
    assert result.exit_code == 1 and "no manifest here" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
