"""Output folders written directly with numpy: the export tests need no extraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.outputs.manifest import manifest_for, write_manifest

I3D = "i3d"


def make_output_folder(
    root: Path, *, videos: dict[str, tuple[int, str | None]], crop_type: str = "5-crop", seed: int = 0
) -> dict[str, np.ndarray]:
    """An output folder as workers leave it: manifest, ``<id>.npy`` (clips, crops, 2048), labels.

    ``videos``: ``relative_id -> (clips, split or None)``; a split writes a ``<id>.json`` label.
    """
    manifest = manifest_for(Recipe(model=I3D, crop_type=crop_type), pretrained_dir=None)
    write_manifest(root, manifest)
    n_crops = len(manifest.settings.facts.crop_order)
    rng = np.random.default_rng(seed)
    arrays = {}
    for relative_id, (clips, split) in videos.items():
        path = root / f"{relative_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays[relative_id] = rng.standard_normal((clips, n_crops, 2048), dtype=np.float32)
        np.save(path, arrays[relative_id])
        if split is not None:
            path.with_suffix(".json").write_text(json.dumps({"split": split, "binary_target": 0}))
    return arrays
