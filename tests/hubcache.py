"""A Hugging Face hub cache built on disk in the library's own layout, so hub ids resolve with no network.

``<cache>/models--<org>--<name>/blobs/<sha256>`` holds the file contents, ``refs/<revision>`` the commit hash
and ``snapshots/<commit>/<file>`` a relative symlink to the blob (a copy where symlinks are unavailable),
exactly what ``huggingface_hub.snapshot_download`` writes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes | Path], revision: str = "main") -> Path:
    """Add ``files`` (name -> content or a file to copy) as ``repo_id`` at ``revision``; returns the snapshot."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            link.write_bytes(data)
    return snapshot


def cache_folder(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Add every file of a ``save_pretrained``-style folder as ``repo_id``."""
    files = {str(p.relative_to(folder)): p for p in sorted(Path(folder).rglob("*")) if p.is_file()}
    return cache_repo(cache, repo_id, files, revision)


def use_cache(monkeypatch, cache: Path) -> Path:
    """Point the hub cache at ``cache`` and forbid network access for the rest of the test."""
    Path(cache).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Path(cache)
