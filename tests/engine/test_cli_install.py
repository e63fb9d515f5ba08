"""The installed command line as a user meets it: the console script in a subprocess, on the versions
of the lock file (CI builds .venv afresh from constraints.txt), with typer's own usage errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("layertracer")


def run_script(*args: str) -> subprocess.CompletedProcess:
    if not CONSOLE_SCRIPT.is_file():
        pytest.skip(f"no console script beside {sys.executable} (the package is not installed in this environment)")
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


def test_version_is_the_one_version_string():
    from layertracer._version import __version__

    proc = run_script("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"layertracer {__version__}"
    assert metadata.version("layertracer") == __version__  # pyproject.toml reads the same string


@pytest.mark.parametrize(
    "args, message",
    [
        (["trace", "--bogus"], r"No such option:? '?--bogus"),  # typer's words changed across releases
        (["trace", "--tasks", "antonyms_en", "--out", "o.json"], "Missing option '--model'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["trace", "-m", "x", "-t", "antonyms_en", "-o", "o.json", "--batch-size", "many"], "Invalid value for '--batch-size'"),
    ],
)
def test_usage_errors_print_typers_usage_line_and_exit_2(args, message):
    proc = run_script(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Usage: layertracer")
    # typer draws the message in a box (rich) and wraps it: compare the words alone
    assert re.search(message, " ".join(re.sub(r"[│╭╮╰╯─]", " ", proc.stderr).split()))


def test_a_user_error_is_one_error_line_and_exit_2(tmp_path):
    proc = run_script("trace", "--model", str(tmp_path / "missing"), "--tasks", "antonyms_en",
                      "--out", str(tmp_path / "o.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: model path '{tmp_path / 'missing'}' does not exist"


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_lock_file_pins_every_package_exactly():
    pins = _lock()
    assert len(pins) > 50
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())
    for name in ("typer", "click", "transformers", "fastapi", "dash", "celery", "sqlalchemy"):
        assert name in pins, f"{name} is not locked"
    assert "torch" not in pins  # scripts/setup pins torch itself (LAYERTRACER_TORCH picks the build)


@pytest.mark.skipif(os.environ.get("LAYERTRACER_UNLOCKED") == "1", reason="scripts/test-latest ignores the lock")
def test_this_environment_has_the_locked_versions():
    """What scripts/setup installed from constraints.txt: every locked package present has its pin."""
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions()}
    off = {name: (want, installed[name]) for name, want in _lock().items() if name in installed and installed[name] != want}
    assert off == {}
    assert {"typer", "transformers", "fastapi"} <= installed.keys()


def test_floors_in_pyproject_hold_for_the_lock():
    """Every lower bound in pyproject.toml is at or below the locked version (a floor above the lock
    could not be installed)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("layertracer")]
    pins = _lock()
    for text in requirements:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in pins:
            assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (text, pins[name])


def test_json_output_of_tasks():
    proc = run_script("tasks", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    from layertracer.tasks.sets import BUILTIN_TASKS, builtin_task

    assert [t["name"] for t in listing] == list(BUILTIN_TASKS)
    first = builtin_task("antonyms_zh", shots=0).items[0]
    entry = next(t for t in listing if t["name"] == "antonyms_zh")
    assert entry["example"] == {"prompt": first.prompt, "target": first.target}
    assert entry["items"] == len(builtin_task("antonyms_zh", shots=0).items)


def test_progress_off_a_terminal_is_plain_lines(saved_model, tmp_path):
    """stderr piped to a file (a CI log, docker logs): steady plain lines, each percentage from its own
    count, the last one at 100%, instead of a bar that shows nothing until the end."""
    if not CONSOLE_SCRIPT.is_file():
        pytest.skip("no console script in this environment")
    env = dict(os.environ, LAYERTRACER_PROGRESS_SECONDS="0")
    proc = subprocess.run([str(CONSOLE_SCRIPT), "trace", "--model", str(saved_model("qwen3")), "--tasks", "antonyms_en",
                           "--limit", "6", "--batch-size", "2", "--no-similarity", "--out", str(tmp_path / "t.json")],
                          capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[progress] ")]
    assert len(lines) >= 5 and "\x1b[" not in proc.stderr  # no terminal codes in a log
    for line in lines:
        match = re.search(r": (\d+)/(\d+) \((\d+)%\)", line)
        assert match, line
        done, total, percent = map(int, match.groups())
        assert percent == 100 * done // total, line  # rounded down: 100% only when it is all done
    assert lines[-1].split(": ", 1)[1].startswith("30/30 (100%)")
