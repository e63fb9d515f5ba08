"""Prints the dependency floors of pyproject.toml as a pip constraints file: every ``name>=X`` of the
core dependencies and of every extra becomes ``name==X`` (torch excepted: scripts/test-floors pins it
through LAYERTRACER_TORCH, as scripts/setup does). Used by scripts/test-floors; stdlib only.

    python3 scripts/floors.py            # constraints on stdout
    python3 scripts/floors.py --torch    # the torch requirement at its floor (torch==X)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# name, optional [extras], then the specifiers (PEP 508, without markers: none are used here).
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.]*)")


def floors(pyproject: Path) -> dict[str, str]:
    """{normalised name: floor version} over the core dependencies and every extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    found: dict[str, str] = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if not match or match.group(1).lower() == "layertracer":
            continue  # the self-reference of the "all" extra
        floor = FLOOR.search(match.group(2))
        if floor:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = floor.group(1)
    return found


def main(argv: list[str]) -> int:
    found = floors(Path(__file__).resolve().parent.parent / "pyproject.toml")
    if argv[1:] == ["--torch"]:
        print(f"torch=={found['torch']}")
        return 0
    print("# The dependency floors of pyproject.toml (scripts/floors.py); torch is pinned separately.")
    for name, version in sorted(found.items()):
        if name != "torch":
            print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
