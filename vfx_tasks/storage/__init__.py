"""Output folders on disk: file names, atomic writes, bounded reads that follow no link, validity.

Owns everything that touches the files of an output folder; imports only :mod:`vfx_tasks.errors`.
:class:`LocalFolder` is the folder opened once (a worker's, an export's); the functions of
:mod:`~vfx_tasks.storage.paths` do the same for a caller holding a path.
"""

from vfx_tasks.storage.files import (
    NpyHeader,
    features_match,
    npy_header,
    read_features,
    read_json,
    write_features,
    write_json,
    write_text,
)
from vfx_tasks.storage.local import FolderLike, LocalFolder, folder_exists, open_folder
from vfx_tasks.storage.names import (
    LABELS_TEMP_SUFFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    TEMP_SUFFIXES,
    TEXT_TEMP_SUFFIX,
    features_name,
    labels_name,
    labels_path,
    output_path,
    reserved_name_problem,
)
from vfx_tasks.storage.paths import (
    find_temp_files,
    is_valid_output,
    read_npy_header,
    remove_temp_files,
    remove_temp_files_of,
    write_features_atomic,
    write_labels_atomic,
    write_text_atomic,
)

__all__ = [
    "LABELS_TEMP_SUFFIX", "TEMP_PREFIX", "TEMP_SUFFIX", "TEMP_SUFFIXES", "TEXT_TEMP_SUFFIX", "FolderLike",
    "LocalFolder", "NpyHeader", "features_match", "features_name", "find_temp_files", "folder_exists",
    "is_valid_output", "labels_name", "labels_path", "npy_header", "open_folder", "output_path",
    "read_features", "read_json", "read_npy_header", "remove_temp_files", "remove_temp_files_of",
    "reserved_name_problem", "write_features", "write_features_atomic", "write_json", "write_labels_atomic",
    "write_text", "write_text_atomic",
]
