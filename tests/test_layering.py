"""Layering: which part of the project may import which (``MAY_IMPORT``, checked for every pair), and
what each may load: the engine never imports the web stack; the web parts never import torch, and of
the engine they import the torch-free spec package (``layertracer.spec``) alone; the API and the
dashboard meet only in the composition root (``service``)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WEB_PACKAGES = ("fastapi", "sqlalchemy", "celery", "dash", "flask", "starlette", "kombu")
ML_PACKAGES = ("torch", "transformers", "numpy", "safetensors", "accelerate")
SPEC = "layertracer.spec"
SPEC_FOUNDATION = ("layertracer.errors",)


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


# Which parts of the project each part may import (by source, lazy imports included). The engine
# beyond the spec is "layertracer"; the spec is "layertracer.spec". Every pair not listed is forbidden.
MAY_IMPORT = {
    "layertracer.spec": {"layertracer.spec"},
    "layertracer": {"layertracer", "layertracer.spec"},
    "backend": {"backend", "layertracer.spec"},
    "frontend": {"frontend", "layertracer.spec"},
    "worker": {"worker", "backend", "layertracer", "layertracer.spec"},
    # The composition root puts the parts together: it may import each of them.
    "service": {"service", "backend", "frontend", "worker", "layertracer", "layertracer.spec"},
}
PARTS = sorted(MAY_IMPORT)


def _part_of_module(module: str):
    """The part a module name belongs to (``layertracer.spec.x`` -> ``layertracer.spec``), or None for
    modules outside the project."""
    # The exception hierarchy imports nothing and is shared by the spec and the engine: the spec's
    # errors are the engine's (a ModelSourceError is a ModelLoadError), so it counts as the spec's.
    if module == SPEC or module.startswith(SPEC + ".") or module in SPEC_FOUNDATION:
        return SPEC
    root = module.split(".")[0]
    return root if root in MAY_IMPORT else None


def _files_of(part: str) -> list[Path]:
    folder = REPO / part.replace(".", "/")
    files = sorted(folder.rglob("*.py"))
    if part == "layertracer":
        files = [f for f in files if SPEC.replace(".", "/") not in str(f.relative_to(REPO))]
    return files


def test_every_package_of_the_project_has_its_row_in_the_matrix():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == {part.split(".")[0] for part in PARTS}


@pytest.mark.parametrize("importer", PARTS)
@pytest.mark.parametrize("imported", PARTS)
def test_each_part_imports_only_the_parts_it_may(importer, imported):
    files = _files_of(importer)
    assert files
    offenders = sorted(str(f.relative_to(REPO)) for f in files
                       if imported in {_part_of_module(m) for m in _imported_modules(f)})
    if imported in MAY_IMPORT[importer]:
        return
    assert offenders == [], f"{importer} must not import {imported}"


@pytest.mark.parametrize("package", ["backend", "frontend", "layertracer.spec"])
def test_web_parts_and_the_spec_name_no_ml_package(package):
    files = _files_of(package)
    offenders = {str(f.relative_to(REPO)): sorted(_imported_roots(f) & set(ML_PACKAGES)) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


@pytest.mark.parametrize("entry", ["layertracer.spec", "backend.api", "service.app", "frontend.app"])
def test_importing_the_spec_and_the_web_parts_loads_no_ml_package(entry):
    """What the source says (above) and what Python loads agree: the spec, the API and the dashboard
    run without torch, transformers or numpy ever being imported."""
    code = f"import sys, {entry}; print(','.join(m for m in {ML_PACKAGES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_service_commands_load_neither_the_web_stack_nor_torch():
    """The CLI loads ``service.commands`` (an entry point) at every start: it must stay light."""
    code = ("import sys, service.commands; "
            f"print(','.join(m for m in {WEB_PACKAGES + ML_PACKAGES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_engine_source_names_no_web_package():
    files = sorted((REPO / "layertracer").rglob("*.py"))
    offenders = {str(f.relative_to(REPO)): sorted(_imported_roots(f) & set(WEB_PACKAGES)) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


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
