"""Layering: the engine never imports the web stack; the web parts never import torch, and of the
engine they import the torch-free spec package (``layertracer.spec``) alone."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WEB_PACKAGES = ("fastapi", "sqlalchemy", "celery", "dash", "flask", "starlette", "kombu")
ML_PACKAGES = ("torch", "transformers", "numpy", "safetensors", "accelerate")
SPEC = "layertracer.spec"


def test_importing_the_engine_imports_no_web_package():
    code = (
        "import sys, layertracer, layertracer.cli, layertracer.tracer; "
        f"print(','.join(m for m in {WEB_PACKAGES!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def _imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)}


def _engine_modules_beyond_the_spec(path: Path) -> list[str]:
    return sorted(m for m in _imported_modules(path)
                  if m.split(".")[0] == "layertracer" and m != SPEC and not m.startswith(SPEC + "."))


@pytest.mark.parametrize("package", ["backend", "frontend"])
def test_web_parts_import_no_ml_package_and_of_the_engine_the_spec_alone(package):
    files = sorted((REPO / package).rglob("*.py"))
    offenders = {str(f.relative_to(REPO)): sorted(_imported_roots(f) & set(ML_PACKAGES)) + _engine_modules_beyond_the_spec(f)
                 for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


@pytest.mark.parametrize("entry", ["layertracer.spec", "backend.api", "backend.combined", "frontend.app"])
def test_importing_the_spec_and_the_web_parts_loads_no_ml_package(entry):
    """What the source says (above) and what Python loads agree: the spec, the API and the dashboard
    run without torch, transformers or numpy ever being imported."""
    code = f"import sys, {entry}; print(','.join(m for m in {ML_PACKAGES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_engine_source_names_no_web_package():
    files = sorted((REPO / "layertracer").rglob("*.py"))
    offenders = {str(f.relative_to(REPO)): sorted(_imported_roots(f) & set(WEB_PACKAGES)) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_worker_imports_no_frontend():
    files = sorted((REPO / "worker").rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(REPO)) for f in files if "frontend" in _imported_roots(f)}
    assert offenders == set()


def test_the_package_and_the_cli_load_no_torch_until_a_command_needs_it():
    """``import layertracer`` is lazy (PEP 562) and the CLI imports the engine inside its commands, so
    ``layertracer --help`` and ``--version`` answer without loading torch or transformers."""
    code = (
        "import sys, layertracer, layertracer.cli, layertracer.errors; "
        "print(','.join(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)); "
        "layertracer.TraceOptions; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["", "True"]  # nothing heavy at first; torch once a name needs it
