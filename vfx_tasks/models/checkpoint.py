"""Finding and reading mmaction2 checkpoints without running code from them.

mmaction2 checkpoints are ``torch.save({"meta": ..., "state_dict": ...})`` files whose state
dict holds ``backbone.*`` tensors, ``neck.*`` tensors for models with a neck (TPN), and
``cls_head.*`` tensors. We keep the backbone and neck, drop the head, and insist that they are
complete: the original tool's ``strict=False`` silently produced features from random weights
when a file did not fit.

Every file is read with ``torch.load(..., weights_only=True)``, whatever its name or hash: a
pickle can call any function it names, so the sha256 prefix in an OpenMMLab file name (32 bits,
forgeable) vouches for a download, never for unpickling. Official OpenMMLab 1.x files also carry
training state saved by mmengine's ``Runner.save_checkpoint``; the few non-tensor types it holds
are allowed by :func:`_openmmlab_safe_globals`, and only for the duration of one load. mmengine's
``HistoryBuffer`` is read into :class:`LoadedHistoryBuffer`, a plain stand-in: the real class's
``__setstate__`` writes into a table shared by the whole process.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
import threading
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from vfx_tasks.errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from vfx_tasks.models.spec import ModelSpec

logger = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone."
NECK_PREFIX = "neck."

# ``torch.serialization.safe_globals`` edits one process-wide allowlist on enter and exit, so two
# threads loading at once could drop each other's entries mid-load; loads take turns.
_LOAD_LOCK = threading.Lock()

# The numpy dtypes a HistoryBuffer or a numpy scalar in the message hub may have. Object dtypes
# are left out: an object array is a container of arbitrary pickled objects.
_NUMERIC_DTYPE_CODES = "?bhilqBHILQefdgFDG"

# HistoryBuffer pickles its class-level table of statistics methods; with torch's default pickle
# protocol 2 each is written as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})
#: Where official files name mmengine's class; the unpickler builds a LoadedHistoryBuffer instead.
_HISTORY_BUFFER_GLOBAL = "mmengine.logging.history_buffer.HistoryBuffer"

# How torch's restricted unpickler names a global it does not allow. It drops the "builtins."
# of a builtin ("GLOBAL eval"), so that its add_safe_globals hint reads as Python.
_UNSUPPORTED_GLOBAL = r"GLOBAL (\S+) was not an allowed global"
# Other ways it (or this module's wrappers) names what it refused.
_OTHER_REFUSALS = (
    r"unsupported GLOBAL (\S+) whose module",
    r"Can only build .*?, but got <class '([^']+)'>",
    r"Can only create new object .*? but got <class '([^']+)'>",
    r"Trying to call reduce for unrecognized function (<[^>]+>|\S+)",
    r"Refused (.+?); ",
)


class LoadedHistoryBuffer:
    """What a checkpoint's mmengine ``HistoryBuffer`` is unpickled into: its data, and nothing else.

    mmengine's own ``__setstate__`` copies the pickled ``statistics_methods`` into
    ``HistoryBuffer._statistics_methods``, a dict on the class, so a file could change how every
    HistoryBuffer of the process computes its statistics. Training statistics are of no use to
    feature extraction; this stand-in keeps them in its own ``__dict__`` and drops the table.
    """

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"Refused HistoryBuffer state of type {type(state).__name__}; "
                                         "expected a dict")
        self.__dict__.update({key: value for key, value in state.items()
                              if isinstance(key, str) and key != "statistics_methods"})

    @property
    def data(self) -> tuple[object, object]:
        """``(log_history, count_history)``, as ``HistoryBuffer.data``."""
        return self.__dict__.get("_log_history"), self.__dict__.get("_count_history")

    def __repr__(self) -> str:
        return f"LoadedHistoryBuffer({sorted(self.__dict__)})"


def _plain_numpy_dtype(*args: object) -> np.dtype:
    """``numpy.dtype`` as the unpickler may call it: numeric dtypes only, no object dtypes."""
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"Refused numpy dtype {dtype}; it holds Python objects")
    return dtype


def _history_buffer_method(owner: object, name: str) -> str:
    """``getattr`` as the unpickler may call it: one of HistoryBuffer's statistics methods, named.

    The entry only fills the table :class:`LoadedHistoryBuffer` drops; its name says what it was.
    """
    if owner is LoadedHistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return f"HistoryBuffer.{name}"
    raise pickle.UnpicklingError(f"Refused getattr({owner!r}, {name!r}); only HistoryBuffer methods")


def _openmmlab_safe_globals() -> list[Callable[..., object] | tuple[Callable[..., object], str]]:
    """Return the globals an OpenMMLab 1.x checkpoint needs beyond torch's own allowlist.

    mmengine's ``Runner.save_checkpoint`` writes ``meta`` (strings, numbers, dicts), ``optimizer``
    and ``param_schedulers`` (tensors, numbers, a ``collections.Counter`` that torch already
    allows) and ``message_hub``, whose ``log_scalars`` are ``HistoryBuffer`` objects holding numpy
    arrays and whose ``runtime_info`` may hold numpy scalars. Everything listed only builds data:

    * numpy arrays and scalars (``_reconstruct``, ``ndarray``, ``scalar``, numeric dtype
      classes) copy raw bytes; ``numpy.dtype`` is wrapped to refuse object dtypes.
    * ``HistoryBuffer`` is built as a :class:`LoadedHistoryBuffer`, whose ``__setstate__`` keeps
      the data in the instance and calls nothing it was given. The table of statistics methods it
      drops is written as ``getattr(HistoryBuffer, name)``, so ``builtins.getattr`` is mapped to a
      function that accepts only those four names and returns a string.

    numpy 1.x writes ``numpy.core.multiarray``, numpy 2 ``numpy._core.multiarray``; both
    names are mapped to the installed module's functions.
    """
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    allowed: list[Callable[..., object] | tuple[Callable[..., object], str]] = [
        np.ndarray,
        (LoadedHistoryBuffer, _HISTORY_BUFFER_GLOBAL),
        (_plain_numpy_dtype, "numpy.dtype"),
        (_history_buffer_method, "builtins.getattr"),
    ]
    allowed += [type(np.dtype(code)) for code in _NUMERIC_DTYPE_CODES]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [
            (multiarray._reconstruct, f"{module}._reconstruct"),
            (multiarray.scalar, f"{module}.scalar"),
        ]
    return allowed


def _refused_global(message: str) -> str | None:
    """Return what torch's restricted unpickler refused, named in ``message``, if it says so."""
    if match := re.search(_UNSUPPORTED_GLOBAL, message):
        name = match.group(1)
        return name if "." in name else f"builtins.{name}"
    for pattern in _OTHER_REFUSALS:
        if match := re.search(pattern, message):
            return match.group(1)
    return None


# A damaged or hand-made pickle can make numpy, torch's zip reader or an allowed constructor
# raise almost anything; all of them mean "this file cannot be read".
_UNREADABLE_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    AssertionError,
    zipfile.BadZipFile,
)


def load_checkpoint_data(path: Path, spec: ModelSpec) -> object:
    """Unpickle a checkpoint without letting it run code: tensors, plain containers and the
    OpenMMLab training-state types of :func:`_openmmlab_safe_globals`, nothing else.

    Raises:
        CheckpointError: the file names any other global (the message names it), or it is not
            a readable torch checkpoint.
    """
    try:
        # The allowlist lives only for this load, never in torch's process-wide list.
        with _LOAD_LOCK, torch.serialization.safe_globals(_openmmlab_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(str(e))
        if refused is None:
            raise _unreadable(path, spec, e) from e
        logger.warning("Refused checkpoint %s: it refers to %s", path, refused)
        raise UnsafeCheckpointError(
            f"Checkpoint {path} refers to {refused}, which a checkpoint may not contain: "
            "unpickling it could run code, so the file is refused whatever its name or sha256. "
            "Fetch the official file again with `vfx-download-models`, or, if you trust this "
            "file, keep only its weights by running on a trusted machine: python -c \"import "
            f"torch; p = '{path}'; torch.save({{'state_dict': torch.load(p, "
            "weights_only=False)['state_dict']}, p)\"."
        ) from e
    except _UNREADABLE_ERRORS as e:
        raise _unreadable(path, spec, e) from e


def _unreadable(path: Path, spec: ModelSpec, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"Cannot read checkpoint {path} ({type(error).__name__}: {error}). The file is damaged or "
        f"not a PyTorch checkpoint; delete it and download it again from {spec.checkpoint_url}."
    )


def read_backbone_state_dict(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Read the ``backbone.*`` tensors of a checkpoint, with the prefix removed.

    Raises:
        CheckpointError: the file is not a readable torch checkpoint, or it would run code.
        CheckpointMismatchError: it holds no backbone tensors.
    """
    state = _read_state_dict(path, spec)
    prefix = len(BACKBONE_PREFIX)
    return {key[prefix:]: value for key, value in state.items() if key.startswith(BACKBONE_PREFIX)}


def read_trunk_state_dict(path: Path, spec: ModelSpec, *, with_neck: bool) -> dict[str, torch.Tensor]:
    """Read the ``backbone.*`` (and, ``with_neck``, ``neck.*``) tensors of a checkpoint, keys kept
    whole, as a :class:`~vfx_tasks.models.backbone.FeatureTrunk` names its parameters.

    Raises:
        CheckpointError: the file is not a readable torch checkpoint, or it would run code.
        CheckpointMismatchError: it holds no backbone tensors.
    """
    prefixes = (BACKBONE_PREFIX, NECK_PREFIX) if with_neck else (BACKBONE_PREFIX,)
    return {key: value for key, value in _read_state_dict(path, spec).items() if key.startswith(prefixes)}


def _read_state_dict(path: Path, spec: ModelSpec) -> Mapping[str, torch.Tensor]:
    """The tensors of a checkpoint's state dict; refused unless some are ``backbone.*``."""
    obj = load_checkpoint_data(path, spec)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict. Expected mmaction2's "
            "layout: {'meta': ..., 'state_dict': {'backbone.*': ..., 'cls_head.*': ...}}."
        )
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not any(key.startswith(BACKBONE_PREFIX) for key in tensors):
        raise CheckpointMismatchError(
            f"Checkpoint {path} has no 'backbone.*' tensors, so it is not an mmaction2 recognizer "
            f"checkpoint for {spec.name!r}. Use the official file from {spec.checkpoint_url}."
        )
    return tensors


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
    config = f" (config {spec.config_name})" if spec.config_name else ""
    raise CheckpointMismatchError(
        f"Checkpoint {path} does not fit the {spec.name!r} backbone{config}; {'; '.join(parts)}. "
        f"Check that the file belongs to this model, or re-download it from {spec.checkpoint_url}."
    )
