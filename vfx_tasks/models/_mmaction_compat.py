"""The single place that papers over packaging defects of the mmaction2 1.2.0 wheel.

Three problems, all upstream, all handled here and nowhere else:

1. The wheel on PyPI lacks ``mmaction/models/localizers/drn/`` (open-mmlab/mmaction2 issue
   2714), yet ``mmaction/models/localizers/__init__.py`` imports ``.drn.drn.DRN``. Importing any
   backbone therefore fails with ``ModuleNotFoundError``. We register an empty stand-in module
   with a ``DRN`` placeholder before mmaction is imported; the DRN localizer is never used here.
2. ``mmaction.utils.dependency`` imports the third-party ``importlib_metadata`` backport, which
   the wheel does not declare. The project depends on it; if it is still missing we alias the
   standard library's ``importlib.metadata``, which offers the same two names mmaction uses.
3. mmengine 0.10.7's checkpoint loader calls ``torch.load`` without ``weights_only``, which
   torch >= 2.6 refuses for OpenMMLab checkpoints (open-mmlab/mmengine issue 1655). We never
   call it: :mod:`vfx_tasks.models.checkpoint` loads state dicts itself.

Call :func:`import_mmaction_backbones` instead of importing mmaction directly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

from vfx_tasks.errors import DependencyError

_DRN_MODULES = ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn")


class _MissingDRN:
    """Placeholder for the localizer that the mmaction2 1.2.0 wheel forgot to ship."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise DependencyError(
            "mmaction2's DRN localizer is missing from the 1.2.0 wheel and is not used by vfx_tasks."
        )


def _install_drn_stand_in() -> None:
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        return
    # Look on disk: find_spec() on the submodule would import the broken parent package.
    if any(os.path.isdir(os.path.join(loc, "models", "localizers", "drn"))
           for loc in spec.submodule_search_locations):
        return  # a fixed wheel (or a source install) ships the real module
    package = types.ModuleType(_DRN_MODULES[0])
    package.__path__ = []  # mark as a package so the submodule import resolves
    module = types.ModuleType(_DRN_MODULES[1])
    module.DRN = _MissingDRN  # type: ignore[attr-defined]
    package.drn = module  # type: ignore[attr-defined]
    sys.modules.setdefault(_DRN_MODULES[0], package)
    sys.modules.setdefault(_DRN_MODULES[1], module)


def _ensure_importlib_metadata() -> None:
    if importlib.util.find_spec("importlib_metadata") is None:
        sys.modules.setdefault("importlib_metadata", importlib.metadata)


def import_mmaction_backbones() -> types.ModuleType:
    """Import and return ``mmaction.models.backbones`` with the wheel's defects patched.

    """
    if "mmaction.models.backbones" in sys.modules:
        return sys.modules["mmaction.models.backbones"]
    _ensure_importlib_metadata()
    _install_drn_stand_in()
    with warnings.catch_warnings():
        # mmcv-lite lacks compiled ops that no backbone here uses; mmcv warns on import.
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        return importlib.import_module("mmaction.models.backbones")
