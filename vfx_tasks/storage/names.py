"""The names of the files in an output folder: features, labels, the folder's own files, temporaries.

Layout: ``<output_dir>/<relative_dir>/<video_id>.npy`` (as the original tool) and the labels as
``<video_id>.json`` beside it. The folder's own files sit at its top: ``vfx-run.json`` (the
manifest), ``index.csv`` and, in an export, ``vfx-export.json``. A video whose labels would take
one of those names is refused (:func:`reserved_name_problem`), so no task can overwrite them.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path, PurePosixPath

from vfx_tasks.errors import OutputError, UnsafeFileError

#: Temporary files start with this prefix, so that leftovers of a killed writer can be found.
TEMP_PREFIX = ".vfx-tmp-"
TEMP_SUFFIX = ".npy.part"
#: The labels' temporary files: a writer killed between labels and features leaves one of these.
LABELS_TEMP_SUFFIX = ".json.part"
#: Other text files' temporaries (the index rebuilt by ``vfx-status --write-index``, the manifest).
TEXT_TEMP_SUFFIX = ".txt.part"
#: Every kind of temporary file a writer here leaves when it is killed mid-write.
TEMP_SUFFIXES = (TEMP_SUFFIX, LABELS_TEMP_SUFFIX, TEXT_TEMP_SUFFIX)
#: Characters of a file's stem kept in its temporary's name: the rest of that name (prefix, random
#: part, suffix) is 27 bytes, and a name may hold 255.
_TEMP_STEM_BYTES = 200

#: The folder's own files at its top, which ``<id>.json`` labels of these ids would replace.
RESERVED_IDS = {"vfx-run": "the folder's manifest (vfx-run.json)",
                "vfx-export": "an export's description (vfx-export.json)"}


def output_path(output_dir: str | os.PathLike[str], relative_id: str) -> Path:
    """``<output_dir>/<relative_dir>/<video_id>.npy`` for ``relative_id = "<relative_dir>/<video_id>"``."""
    return Path(output_dir, features_name(relative_id))


def labels_path(output_dir: str | os.PathLike[str], relative_id: str) -> Path:
    """``<output_dir>/<relative_dir>/<video_id>.json``: the labels beside the features."""
    return Path(output_dir, labels_name(relative_id))


def features_name(relative_id: str) -> str:
    """``<relative_dir>/<video_id>.npy``, relative to the output folder.

    Raises:
        OutputError: the id is absolute or climbs out of the folder with ``..``.
    """
    relative = PurePosixPath(relative_id)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise OutputError(f"Invalid relative id ({relative_id!r}): it must stay inside the output folder.")
    return relative_id + ".npy"


def labels_name(relative_id: str) -> str:
    """``<relative_dir>/<video_id>.json``, relative to the output folder.

    Raises:
        OutputError: as :func:`features_name`.
        UnsafeFileError: the id is reserved: its labels would replace one of the folder's own files.
    """
    if (problem := reserved_name_problem(relative_id)) is not None:
        raise UnsafeFileError(f"Refusing to write labels for {relative_id!r}: {problem}.")
    return features_name(relative_id)[: -len(".npy")] + ".json"


def reserved_name_problem(relative_id: str) -> str | None:
    """Why ``relative_id`` may not name a video of an output folder, or ``None`` when it may.

    Top-level ``vfx-run`` and ``vfx-export`` (any case: some file systems ignore it) would write
    their labels over the folder's manifest or an export's description; a name starting with
    :data:`TEMP_PREFIX` would pass for a killed writer's leftover and be deleted.
    """
    name = relative_id.rsplit("/", 1)[-1]
    if "/" not in relative_id and (owner := RESERVED_IDS.get(name.casefold())):
        return (f"the name {name!r} is reserved at the top of an output folder for {owner}; move the "
                "video into a subfolder or rename it")
    if name.startswith(TEMP_PREFIX):
        return f"names starting with {TEMP_PREFIX!r} are reserved for temporary files; rename the video"
    return None


def temp_name(final_name: str, temp_suffix: str) -> str:
    """A fresh temporary name beside ``final_name`` (a base name): ``.vfx-tmp-<stem>.<random><suffix>``."""
    stem = os.fsencode(final_name.rsplit(".", 1)[0])[:_TEMP_STEM_BYTES].decode(errors="ignore")
    return f"{TEMP_PREFIX}{stem}.{secrets.token_hex(4)}{temp_suffix}"


def is_temp_name(name: str) -> bool:
    """Whether a base name is a temporary file of some writer here."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIXES)


def temp_name_pattern(final_name: str) -> re.Pattern[str]:
    """The temporary names of one file (a base name, features or labels) and of no other.

    The random part has no dot (mkstemp's letters, digits and ``_``; our hex), so ``a``'s pattern
    does not take ``a.b``'s temporaries.
    """
    stem = os.fsencode(final_name.rsplit(".", 1)[0])[:_TEMP_STEM_BYTES].decode(errors="ignore")
    suffixes = "|".join(re.escape(suffix) for suffix in TEMP_SUFFIXES)
    return re.compile(rf"{re.escape(TEMP_PREFIX + stem)}\.[a-z0-9_]+(?:{suffixes})")
