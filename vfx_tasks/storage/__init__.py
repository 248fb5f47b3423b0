"""Output folders on disk and in object storage: names, atomic writes, bounded reads, validity.

Owns everything that touches the files of an output folder; imports only :mod:`vfx_tasks.errors`.
:class:`LocalFolder` is a local folder opened once (a worker's, an export's), following no link;
:class:`RemoteFolder` one in object storage (``s3://``, ``gs://``, through fsspec), with the same
methods; :func:`open_folder` picks one by location. The functions of
:mod:`~vfx_tasks.storage.paths` do the same for a caller holding a local path.
"""

from vfx_tasks.storage._client import ObjectInfo, storage_errors
from vfx_tasks.storage.files import (
    NpyHeader,
    encode_json,
    features_match,
    header_from_size,
    npy_header,
    read_features,
    read_json,
    write_features,
    write_json,
    write_text,
)
from vfx_tasks.storage.folders import (
    FileInfo,
    Folder,
    FolderLike,
    folder_exists,
    is_open_folder,
    open_folder,
    open_folder_under,
)
from vfx_tasks.storage.local import LocalFolder
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
from vfx_tasks.storage.remote import RemoteFolder, fetch_object, list_objects
from vfx_tasks.storage.urls import UrlPath, is_url, join_url, normalize_url, url_is_under

__all__ = [
    "LABELS_TEMP_SUFFIX", "TEMP_PREFIX", "TEMP_SUFFIX", "TEMP_SUFFIXES", "TEXT_TEMP_SUFFIX", "FileInfo",
    "Folder", "FolderLike",
    "encode_json", "LocalFolder", "NpyHeader", "ObjectInfo", "RemoteFolder", "UrlPath",
    "features_match", "features_name", "fetch_object", "find_temp_files", "folder_exists",
    "header_from_size", "is_open_folder", "is_url", "is_valid_output", "join_url", "labels_name",
    "labels_path", "list_objects", "normalize_url", "npy_header", "open_folder", "open_folder_under",
    "output_path", "storage_errors", "url_is_under",
    "read_features", "read_json", "read_npy_header", "remove_temp_files", "remove_temp_files_of",
    "reserved_name_problem", "write_features", "write_features_atomic", "write_json", "write_labels_atomic",
    "write_text", "write_text_atomic",
]
