"""Hub names without the Hub client: :mod:`vfx_tasks.sources.hub_paths` is a leaf, and the repository
id rules it shares with :mod:`vfx_tasks.sources.hub` keep their messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROCESS_TIMEOUT_SECONDS, REPO_DIR
from vfx_tasks.errors import ConfigurationError
from vfx_tasks.sources.hub_dataset import HubDatasetSource


def test_hub_paths_imports_without_the_hub_module() -> None:
    # Given a fresh interpreter, when only hub_paths is imported (as a worker checking a location does),
    script = (
        "import json, sys\n"
        "import vfx_tasks.sources.hub_paths\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_SECONDS,
        check=True,
    )
    # then neither vfx_tasks.sources.hub nor huggingface_hub came with it.
    loaded = json.loads(result.stdout)
    assert "vfx_tasks.sources.hub_paths" in loaded
    assert [m for m in loaded if m == "vfx_tasks.sources.hub" or m.startswith("huggingface_hub")] == []


@pytest.mark.parametrize(
    ("repo_id", "message"),
    [
        ("xd-violence", r"Invalid Hugging Face dataset \('xd-violence'\)\. Give it as owner/name"),
        ("../xd-violence", r"Invalid Hugging Face dataset \('\.\./xd-violence'\): .+ Give it as owner/name"),
        ("a/b/c", r"Invalid Hugging Face dataset \('a/b/c'\): .+ Give it as owner/name"),
    ],
)
def test_repository_ids_need_an_owner_and_huggingface_hub_rules(repo_id: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        HubDatasetSource(repo_id)
    assert HubDatasetSource("jherng/xd-violence").repo_id == "jherng/xd-violence"
