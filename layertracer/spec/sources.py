"""Model sources: one rule for what ``--model`` (or the API's ``source``) names.

An existing local path (a folder, or a file, which the loader then refuses) is a path: as given (``~`` expanded), or, where roots are configured (the
service), relative to one of them. Anything else is a Hugging Face hub repo id (``org/name`` or a canonical ``name``), checked by
huggingface_hub's own validator, with an optional revision: ``org/name@rev`` (a branch, a tag or a
commit hash) or the ``revision`` argument. Text that can only be a path (absolute, ``./``, ``../``,
``~``, more than one ``/``) and does not exist is an error that says so, not a hub look-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional

from layertracer.errors import ModelLoadError

REVISION_SEPARATOR = "@"
MAX_SOURCE_CHARS = 1000


class ModelSourceError(ModelLoadError, ValueError):
    """A model source that is neither an existing folder nor a valid hub id; the message is one line."""


@dataclass(frozen=True)
class ModelSource:
    """A parsed model source. kind ``local``: ``location`` is the folder (as found, ``~`` expanded);
    kind ``hub``: ``location`` is the repo id and ``revision`` the branch, tag or commit (None: main)."""

    kind: Literal["local", "hub"]
    location: str
    revision: Optional[str] = None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def __str__(self) -> str:
        if self.kind == "hub" and self.revision:
            return f"{self.location}{REVISION_SEPARATOR}{self.revision}"
        return self.location


def _existing_path(text: str, roots: Iterable[os.PathLike | str]) -> Optional[Path]:
    # With roots (the service), a relative path is looked up under the roots only, never under the
    # process's working folder; without (the CLI, a notebook), as given.
    roots = list(roots)
    path = Path(text).expanduser()
    candidates = [Path(root) / path for root in roots] if roots and not path.is_absolute() else [path]
    for candidate in candidates:
        try:
            if candidate.exists():  # a file too: the loader then says it is no model folder
                return candidate
        except (OSError, ValueError):  # a name too long, NUL: not a usable path
            continue
    return None


def is_path_like(text: str) -> bool:
    """Text no hub id can be: absolute, ``.``/``~`` prefixed, a backslash, or more than one ``/``."""
    return (os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1
            or text.endswith("/"))


def parse_model_source(text: str, *, revision: Optional[str] = None,
                       roots: Iterable[os.PathLike | str] = ()) -> ModelSource:
    """``text`` -> a local folder or a hub repo id (see the module docstring); ModelSourceError else.

    revision: a revision given apart (``--revision``); it must agree with one written as ``@rev``.
    roots: folders a relative local path may lie under (the service's model roots).
    """
    text = (text or "").strip()
    if not text:
        raise ModelSourceError("the model source is empty: give a local folder or a hub id such as org/name")
    if len(text) > MAX_SOURCE_CHARS or "\x00" in text:
        raise ModelSourceError(f"the model source is not a usable path or hub id (over {MAX_SOURCE_CHARS} characters or a NUL)")
    folder = _existing_path(text, roots)
    if folder is not None:
        if revision:
            raise ModelSourceError(f"a revision ({revision!r}) applies to hub ids, not to the local folder {text!r}")
        return ModelSource("local", str(folder))
    if is_path_like(text):
        raise ModelSourceError(f"model path {text!r} does not exist")
    repo_id, separator, written = text.partition(REVISION_SEPARATOR)
    if separator and not written.strip():
        raise ModelSourceError(f"{text!r} has an empty revision after '@'")
    written = written.strip() or None
    if revision and written and revision != written:
        raise ModelSourceError(f"two revisions for {repo_id!r}: {written!r} in the id and {revision!r} apart")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        reason = " ".join(str(exc).split())
        raise ModelSourceError(f"{text!r} is neither an existing folder nor a valid hub id (org/name): {reason}") from None
    return ModelSource("hub", repo_id, revision or written)
