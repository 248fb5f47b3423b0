"""Finding, verifying and reading mmaction2 checkpoints, without mmengine's loader.

mmaction2 checkpoints are ``torch.save({"meta": ..., "state_dict": ...})`` files whose state
dict holds ``backbone.*`` tensors and ``cls_head.*`` tensors. We keep the backbone, drop the
head, and insist that the backbone is complete: the original tool's ``strict=False`` silently
produced features from random weights when a file did not fit.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from vfx_tasks.errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError
from vfx_tasks.models.spec import ModelSpec

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."


def checkpoint_path(spec: ModelSpec, pretrained_dir: Path) -> Path:
    """Return the path of ``spec``'s checkpoint in ``pretrained_dir``.

    Raises:
        CheckpointNotFoundError: the file is not there; the message says how to get it.
    """
    path = Path(pretrained_dir) / spec.checkpoint_filename
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"Checkpoint for model {spec.name!r} not found at {path}. Download it with "
            f"`curl -L -o {path} {spec.checkpoint_url}` (or `vfx-download-models`), or point "
            "--pretrained-dir / VFX_PRETRAINED_DIR at the folder that holds it."
        )
    return path


def file_sha256(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _load_trusted(path: Path, spec: ModelSpec) -> object:
    """Load a checkpoint whose pickle holds more than tensors (official files keep optimiser
    and logger state in it). Full unpickling runs code, so only the official file, recognised
    by its sha256 prefix, is loaded this way."""
    expected = spec.checkpoint_sha256_prefix
    if expected is None or not file_sha256(path).startswith(expected):
        raise CheckpointError(
            f"Checkpoint {path} holds objects other than tensors and is not the official file "
            f"(its sha256 does not start with {expected}). Re-download it from "
            f"{spec.checkpoint_url}, or save only its state dict with torch.save."
        )
    logger.info("Loading verified official checkpoint %s with full unpickling", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def read_backbone_state_dict(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Read the ``backbone.*`` tensors of a checkpoint, with the prefix removed.

    Raises:
        CheckpointError: the file is not a readable torch checkpoint.
        CheckpointMismatchError: it holds no backbone tensors.
    """
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch's restricted unpickler names an "Unsupported global" when the file is a
            # sound pickle holding non-tensor objects; anything else means a damaged file.
            if "unsupported global" not in str(e).lower():
                raise
            obj = _load_trusted(path, spec)
    except CheckpointError:
        raise
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(
            f"Cannot read checkpoint {path} ({type(e).__name__}: {e}). The file is damaged or not "
            f"a PyTorch checkpoint; delete it and download it again from {spec.checkpoint_url}."
        ) from e
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict. Expected mmaction2's "
            "layout: {'meta': ..., 'state_dict': {'backbone.*': ..., 'cls_head.*': ...}}."
        )
    backbone = {
        key[len(BACKBONE_PREFIX) :]: value
        for key, value in state.items()
        if key.startswith(BACKBONE_PREFIX) and isinstance(value, torch.Tensor)
    }
    if not backbone:
        raise CheckpointMismatchError(
            f"Checkpoint {path} has no 'backbone.*' tensors, so it is not an mmaction2 recognizer "
            f"checkpoint for {spec.name!r}. Use the official file from {spec.checkpoint_url}."
        )
    return backbone


def check_state_dict_fits(
    expected: Mapping[str, torch.Tensor],
    found: Mapping[str, torch.Tensor],
    *,
    path: Path,
    spec: ModelSpec,
    max_listed: int = 10,
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``found`` has exactly ``expected``'s keys
    with the same shapes. The message lists what is missing, unexpected or mis-shaped."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mis_shaped = sorted(
        f"{key}: checkpoint {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(found)
        if found[key].shape != expected[key].shape
    )
    if not (missing or unexpected or mis_shaped):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if items:
            shown = ", ".join(items[:max_listed])
            more = f" (and {len(items) - max_listed} more)" if len(items) > max_listed else ""
            parts.append(f"{len(items)} {label}: {shown}{more}")
    raise CheckpointMismatchError(
        f"Checkpoint {path} does not fit the {spec.name!r} backbone; {'; '.join(parts)}. "
        f"Check that the file belongs to this model, or re-download it from {spec.checkpoint_url}."
    )
