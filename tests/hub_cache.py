"""A Hugging Face hub cache laid out on disk in the hub's own layout, standing in for the hub.

    <cache>/models--<org>--<name>/blobs/<hash>                  file contents, named by their hash
    (datasets--<org>--<name>/... for a dataset repo, in the same layout)
    <cache>/models--<org>--<name>/refs/<branch or tag>          the commit hash a ref points to
    <cache>/models--<org>--<name>/snapshots/<commit>/<file>     a relative symlink to ../../blobs/<hash>

As the hub does: large (LFS) files such as safetensors weights are named by the sha256 of their
content, small files by their git blob sha1. Written from the layout huggingface_hub documents, not
with any code of LayerTracer, so loading from it tests the real path a user's cache takes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out(cache: Path, repo_id: str, folder: Path, *, commit: str, refs: dict[str, str],
            repo_type: str = "model") -> Path:
    """Copy the files of ``folder`` (subfolders included, as a dataset's ``data/``) into ``cache`` as
    snapshot ``commit`` of ``repo_id`` (a ``model`` or ``dataset`` repo); write each ref (branch or tag
    name -> commit). Returns the snapshot folder."""
    repo = cache / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.rglob("*")):
        if not file.is_file():
            continue
        data = file.read_bytes()
        lfs = file.suffix in LFS_SUFFIXES + (".parquet",)
        name = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        (blobs / name).write_bytes(data)
        relative = file.relative_to(folder)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        up = [".."] * (len(relative.parts) + 1)  # from the link's folder back to the repo folder
        os.symlink(os.path.join(*up, "blobs", name), link)
    (repo / "refs").mkdir(exist_ok=True)
    for ref, target in refs.items():
        path = repo / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(target)  # the hub writes the bare hash, no newline
    return snapshot
