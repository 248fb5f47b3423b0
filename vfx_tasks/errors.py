"""One error tree for the whole package.

Every error says what went wrong, the offending value, and what to do about it. Errors fall
into two families that the queue treats differently:

* :class:`PermanentError`: retrying cannot help (a corrupt video, an unknown model, missing
  weights). The task fails at once and the reason is recorded.
* :class:`TransientError`: the world may be better in a moment (network, Redis, GPU memory).
  The task is retried with backoff.

Exception arguments are plain strings so that they survive JSON serialisation through the
Celery result backend.
"""

from __future__ import annotations


class VfxError(Exception):
    """Base class of every error raised on purpose by vfx_tasks."""

    #: Stable, machine-readable name of the error kind (kept in task results and the ledger).
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-friendly description: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}


class PermanentError(VfxError):
    """A failure that will happen again on every retry; never retried."""

    code = "permanent"


class TransientError(VfxError):
    """A failure that may go away on its own; retried with backoff."""

    code = "transient"


class ConfigurationError(PermanentError):
    """An argument or setting has a value that cannot work (unknown crop type, bad batch size...)."""

    code = "bad_configuration"


class UnknownModelError(ConfigurationError):
    """The requested model name is not one of the supported backbones."""

    code = "unknown_model"


class CheckpointError(PermanentError):
    """Model weights are missing, unreadable, or do not fit the backbone."""

    code = "bad_checkpoint"


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint file is not in the pretrained directory."""

    code = "checkpoint_not_found"


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle refers to something that could run code; it is never unpickled."""

    code = "unsafe_checkpoint"


class CheckpointMismatchError(CheckpointError):
    """The checkpoint lacks backbone tensors or holds them with the wrong shapes."""

    code = "checkpoint_mismatch"


class VideoError(PermanentError):
    """A video cannot be read: missing, unreadable, empty, corrupt or not a video at all."""

    code = "bad_video"


class VideoTooLargeError(VideoError):
    """A video's frames hold more pixels than ``VFX_MAX_PIXELS``: decoding them would exhaust memory."""

    code = "video_too_large"


class VideoDownloadError(VideoError):
    """A video cannot be fetched from the Hugging Face Hub: gone (404), no access, or truncated every time."""

    code = "download_failed"


class UnsafePathError(PermanentError):
    """A remote file name would escape the output folder (``..``, absolute, backslashes, encoded tricks)."""

    code = "unsafe_path"


class UnsafeFileError(PermanentError):
    """A path inside an output folder is a symbolic link, not a regular file or folder, or larger than
    anything vfx_tasks writes there: it is neither followed nor read, since its target could be anywhere."""

    code = "unsafe_file"


class DependencyError(PermanentError):
    """A program or package the requested feature needs is missing (no ``redis-server`` for ``--local``)."""

    code = "missing_dependency"


class DeviceOutOfMemoryError(TransientError):
    """The accelerator ran out of memory even at the smallest batch size."""

    code = "out_of_memory"


class WorkerDiedError(PermanentError):
    """The workers processing a video kept dying (OOM killer, decoder crash) past the redelivery cap."""

    code = "worker_died"


class BrokerUnavailableError(TransientError):
    """The Redis server behind the broker, the result backend or the ledger cannot be reached."""

    code = "broker_unavailable"


class HubUnavailableError(TransientError):
    """The Hugging Face Hub (or the ``HF_ENDPOINT`` mirror) cannot be reached or answers 5xx/429 for now."""

    code = "hub_unavailable"


class LocalWorkersDiedError(TransientError):
    """Every worker started by ``vfx-enqueue --local`` exited while videos were still queued."""

    code = "local_workers_died"


class WaitTimeoutError(TransientError):
    """``vfx-enqueue --wait`` stopped waiting before every video finished (they stay queued)."""

    code = "wait_timeout"


class OutputError(TransientError):
    """A feature file cannot be written (disk full, permissions, network file system hiccup)."""

    code = "output_error"


class CheckpointDownloadError(TransientError):
    """A checkpoint cannot be fetched: server unreachable, HTTP error, or the transfer kept breaking."""

    code = "checkpoint_download_failed"


class ChecksumMismatchError(CheckpointError):
    """A downloaded checkpoint's sha256 does not start with the digits its file name promises."""

    code = "checksum_mismatch"


class NameTooLongError(PermanentError):
    """A file or folder name is longer than the file system takes (ENAMETOOLONG): no retry shortens it."""

    code = "name_too_long"


class MemoryLimitError(TransientError):
    """A worker process ran out of memory (its ``VFX_MEMORY_LIMIT_MB``, or the machine's): retried,
    since the videos in flight beside it may have taken the memory; fails after the retries."""

    code = "memory_limit"


class UntrustedMessageError(PermanentError):
    """A task message names a path outside VFX_INPUT_ROOTS/VFX_OUTPUT_ROOTS or values out of bounds."""

    code = "untrusted_message"


class ModelFilesChangedError(ConfigurationError):
    """A user's model config (or a ``_base_`` file) or checkpoint no longer has the sha256 its run
    recorded when it was queued: it changed since, or the task message was not a producer's."""

    code = "model_files_changed"


class ManifestMismatchError(ConfigurationError):
    """A run's settings differ from those recorded in its output folder's ``vfx-run.json``."""

    code = "manifest_mismatch"


class TaskTimeoutError(PermanentError):
    """A video's task ran past its time limit (a hung decoder or download, or a video too long for it)."""

    code = "timeout"


class StorageAccessError(PermanentError):
    """Object storage refuses access: no credentials, credentials refused, no permission, no such bucket."""

    code = "storage_access_denied"


class ObjectNotFoundError(PermanentError):
    """An object listed earlier is gone (deleted or moved between the listing and the fetch)."""

    code = "not_found"


class StorageUnavailableError(TransientError):
    """Object storage cannot be reached, throttles (503 SlowDown) or answers 5xx for now."""

    code = "storage_unavailable"


class BrokerBusyError(BrokerUnavailableError):
    """Redis answers but refuses the command for now: out of memory, loading its data, or read-only."""

    code = "broker_busy"
