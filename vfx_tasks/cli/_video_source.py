"""Where ``vfx-enqueue`` takes its videos from: a local folder, a prefix in object storage or a
Hugging Face dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from vfx_tasks.sources.base import LocalFolderSource, VideoSource
from vfx_tasks.sources.hub_dataset import HubDatasetSource, Split
from vfx_tasks.sources.objects import ObjectStoreSource
from vfx_tasks.storage import is_url


def check_arguments(
    *, hf_dataset: str | None, input_dir: str | None, local: bool, broker_url: str | None
) -> None:
    """``click.UsageError`` unless the videos come from exactly one place, and Redis from one."""
    if hf_dataset and input_dir:
        raise click.UsageError("--hf_dataset and --input_dir are mutually exclusive; give one.")
    if not hf_dataset and not input_dir:
        raise click.UsageError("Give the videos with --input_dir or --hf_dataset.")
    if local and broker_url:
        raise click.UsageError("--local starts its own Redis; drop --broker_url.")


def make_source(
    *,
    hf_dataset: str | None,
    input_dir: str | None,
    split: Split,
    revision: str,
    hf_pattern: str | None,
    hf_video_column: str | None,
    hf_config: str | None,
    storage_options: Mapping[str, Any] | None = None,
) -> VideoSource:
    """The folder, the prefix (an ``--input_dir`` URL, listed with ``storage_options``) or the Hub
    dataset; ``click.UsageError`` for Hub options given with a folder."""
    if input_dir is not None:
        hf_only = {
            "--split": split != "all",
            "--revision": revision != "main",
            "--hf-pattern": hf_pattern,
            "--hf-video-column": hf_video_column,
            "--hf-config": hf_config,
        }
        given = [name for name, value in hf_only.items() if value]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} only apply to --hf_dataset; drop them with --input_dir."
            )
        if is_url(input_dir):
            return ObjectStoreSource(input_dir, storage_options=storage_options)
        return LocalFolderSource(input_dir)
    assert hf_dataset is not None  # check_arguments made sure
    return HubDatasetSource(
        hf_dataset,
        split=split,
        revision=revision,
        pattern=hf_pattern,
        video_column=hf_video_column,
        config=hf_config,
    )
