"""A run and its jobs: what the producer sends, the message carries and the worker receives.

A :class:`Run` is an output folder and a :class:`~vfx_tasks.extract.recipe.Recipe`; its id hashes
both (the fields that change the features), so every producer and worker computes the same ledger
keys and task ids. A :class:`Job` is one video of a run: the ``vfx.extract_video`` message's
arguments are :meth:`Job.to_message`, flat JSON primitives, and a worker reads them back with
:meth:`Job.from_message`, which refuses anything malformed, and a ``run_id`` that is not the id
of the run the message's folder and settings name: a message reports only on its own run.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vfx_tasks.errors import ConfigurationError, UntrustedMessageError
from vfx_tasks.extract.recipe import Recipe
from vfx_tasks.storage import is_url, normalize_url

_TASK_ID_NAMESPACE = uuid.UUID("5b0e3c56-8f57-4c55-9d0e-8f1c9a6c2b41")
#: The message arguments a job has besides its recipe's fields.
_JOB_ARGUMENTS = ("video_path", "output_dir", "relative_id", "run_id")


@dataclass(frozen=True)
class Run:
    """What makes two extractions produce the same features in the same place."""

    output_dir: str
    recipe: Recipe

    @classmethod
    def create(cls, output_dir: str | os.PathLike[str], recipe: Recipe) -> Run:
        """A run with ``output_dir`` made absolute (a URL: canonical), so every machine agrees on its id.

        Raises:
            ConfigurationError: a malformed URL (credentials in it, ``..`` segments...).
        """
        if is_url(str(output_dir)):
            return cls(normalize_url(str(output_dir), what="--output_dir"), recipe)
        return cls(str(Path(output_dir).expanduser().resolve()), recipe)

    @cached_property
    def run_id(self) -> str:
        payload = json.dumps({"output_dir": self.output_dir, **self.recipe.run_key()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def task_id(self, relative_id: str) -> str:
        """Deterministic task id of one video in this run (a UUID, as Celery expects)."""
        return str(uuid.uuid5(_TASK_ID_NAMESPACE, f"{self.run_id}/{relative_id}"))

    def to_meta(self) -> dict[str, str]:
        """The run's description in the ledger (strings: a Redis hash)."""
        settings = self.recipe.feature_settings()
        return {"output_dir": self.output_dir, **{key: str(value) for key, value in settings.items()}}

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> Run | None:
        """The run a ledger description stands for; ``None`` if it is malformed or does not hash to
        the ``run_id`` it is filed under (it was written by someone else than a producer)."""
        try:
            run = cls(meta["output_dir"], Recipe.from_mapping(meta, from_text=True))
        except (KeyError, ConfigurationError):
            return None
        return run if run.run_id == meta.get("run_id") else None


@dataclass(frozen=True)
class Job:
    """One video of a run, as a ``vfx.extract_video`` message carries it."""

    run: Run
    relative_id: str
    video_path: str
    #: The run id the message names: the producer's :attr:`Run.run_id`, which
    #: :meth:`from_message` has checked against the run its fields name.
    run_id: str
    #: Labels that came with the video (Hugging Face sources), written beside the features as JSON.
    labels: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def create(cls, run: Run, *, relative_id: str, video_path: str,
               labels: Mapping[str, Any] | None = None) -> Job:
        return cls(run, relative_id, video_path, run.run_id, None if labels is None else dict(labels))

    @property
    def recipe(self) -> Recipe:
        return self.run.recipe

    @property
    def output_dir(self) -> str:
        return self.run.output_dir

    def to_message(self) -> dict[str, Any]:
        """The task's keyword arguments (``labels`` only when the video has some)."""
        kwargs: dict[str, Any] = {
            "video_path": self.video_path,
            "output_dir": self.output_dir,
            "relative_id": self.relative_id,
            "run_id": self.run_id,
            **self.recipe.to_mapping(),
        }
        if self.labels is not None:
            kwargs["labels"] = self.labels
        return kwargs

    @classmethod
    def from_message(cls, kwargs: Any) -> Job:
        """The job a message's keyword arguments describe (the inverse of :meth:`to_message`).

        Raises:
            UntrustedMessageError: an argument is missing, unknown, or of the wrong type or value,
                or ``run_id`` is not the id of the run ``output_dir`` and the settings name.
        """
        if not isinstance(kwargs, Mapping):
            raise _refuse(f"the arguments are a {type(kwargs).__name__}, not an object")
        unknown = set(kwargs) - set(_JOB_ARGUMENTS) - set(Recipe.__dataclass_fields__) - {"labels"}
        if unknown:
            raise _refuse(f"unknown arguments {', '.join(sorted(map(str, unknown)))[:200]}")
        for name in _JOB_ARGUMENTS:
            if not isinstance(kwargs.get(name), str):
                raise _refuse(f"{name} must be a string, not {type(kwargs.get(name)).__name__}")
        labels = kwargs.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise _refuse(f"labels must be a JSON object or null, not {type(labels).__name__}")
        try:
            recipe = Recipe.from_mapping(kwargs)
        except ConfigurationError as e:
            raise _refuse(str(e).rstrip(".")) from None
        run = Run(kwargs["output_dir"], recipe)
        if kwargs["run_id"] != run.run_id:
            # Before any ledger write: otherwise a message could file its outcome under another run.
            raise _refuse(
                f"run_id {kwargs['run_id'][:100]!r} is not {run.run_id}, the id of the run its output_dir "
                "and settings name; a task may only report on its own run"
            )
        return cls(run, kwargs["relative_id"], kwargs["video_path"], kwargs["run_id"], labels)


def ledger_key(kwargs: Any) -> tuple[str, str] | None:
    """``(run_id, relative_id)`` a message's outcome is filed under in the ledger, or ``None`` when
    its arguments are not a job's (see :meth:`Job.from_message`): such a message's outcome belongs
    to no run, not even the one it names."""
    try:
        job = Job.from_message(kwargs)
    except UntrustedMessageError:
        return None
    return job.run_id, job.relative_id


def _refuse(problem: str) -> UntrustedMessageError:
    return UntrustedMessageError(f"Refusing task: {problem}.")
