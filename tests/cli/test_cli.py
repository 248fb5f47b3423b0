"""What the four commands share: ``--version``, one ``VFX_*`` variable per option, both spellings,
sectioned ``--help``, and errors that exit with the promised code and an ``Error:`` line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.core import ParameterSource
from click.testing import CliRunner

from vfx_tasks import __version__
from vfx_tasks.cli import download, enqueue, export, models, status, worker
from vfx_tasks.cli._help import VfxOption
from vfx_tasks.cli.errors import cli_error
from vfx_tasks.errors import (
    BrokerUnavailableError,
    CheckpointNotFoundError,
    ConfigurationError,
    LocalWorkersDiedError,
    VfxError,
    WaitTimeoutError,
)
from vfx_tasks.queue.processes.redis_server import free_port

COMMANDS = {
    "vfx-enqueue": enqueue.main,
    "vfx-worker": worker.main,
    "vfx-status": status.main,
    "vfx-download-models": download.main,
    "vfx-export": export.main,
    "vfx-models": models.main,
}

#: Every variable each command reads; a rename shows up here first (docker-compose.yml, .env files
#: and scripts set these names).
VARIABLES = {
    "vfx-enqueue": set(
        """VFX_INPUT_DIR VFX_HF_DATASET VFX_SPLIT VFX_REVISION VFX_HF_PATTERN VFX_HF_VIDEO_COLUMN
        VFX_HF_CONFIG VFX_MODEL VFX_CROP_TYPE VFX_NUM_CLIPS_PER_VIDEO VFX_CLIP_SAMPLING VFX_PRECISION
        VFX_DECODER VFX_BATCH_SIZE VFX_MODEL_CONFIG VFX_CHECKPOINT VFX_OUTPUT_DIR
        VFX_FORCE_STOP_AFTER_N_VIDEOS VFX_CHECK_PROGRESS VFX_FORCE
        VFX_DRY_RUN VFX_BROKER_URL VFX_WAIT VFX_WAIT_TIMEOUT VFX_POLL_SECONDS VFX_LOCAL VFX_DEVICE
        VFX_PRETRAINED_DIR VFX_CONCURRENCY VFX_POOL VFX_KEEP_DOWNLOADS VFX_STORAGE_OPTIONS""".split()
    ),
    "vfx-worker": set(
        """VFX_GPU VFX_GPUS VFX_DEVICE VFX_BROKER_URL VFX_RESULT_BACKEND VFX_PRETRAINED_DIR
        VFX_CONCURRENCY VFX_POOL VFX_NAME VFX_LOGLEVEL VFX_KEEP_DOWNLOADS VFX_DRY_RUN""".split()
    ),
    "vfx-status": {"VFX_OUTPUT_DIR", "VFX_MODEL", "VFX_BROKER_URL", "VFX_JSON", "VFX_WRITE_INDEX",
                   "VFX_STORAGE_OPTIONS"},
    "vfx-download-models": {"VFX_PRETRAINED_DIR", "VFX_BASE_URL", "VFX_TIMEOUT_SECONDS", "VFX_LIST_ONLY"},
    "vfx-models": {"VFX_FAMILY", "VFX_PRETRAINED_DIR"},
    "vfx-export": {"VFX_LAYOUT", "VFX_FORMAT", "VFX_COMPRESSION", "VFX_SPLIT", "VFX_LIST",
                   "VFX_STORAGE_OPTIONS"},
}


def options_of(command: click.Command) -> list[click.Option]:
    """The command's own options (not --help and --version)."""
    return [p for p in command.params if isinstance(p, click.Option) and p.expose_value]


@pytest.mark.parametrize("prog_name", COMMANDS)
def test_every_command_answers_version(prog_name: str) -> None:
    result = CliRunner().invoke(COMMANDS[prog_name], ["--version"])

    assert result.exit_code == 0
    assert result.output == f"{prog_name}, version {__version__}\n"


def test_version_is_not_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # VFX_VERSION=1 in a shell must not turn every run into a version query (which would exit here).
    monkeypatch.setenv("VFX_VERSION", "1")

    status.main.make_context("vfx-status", [])


@pytest.mark.parametrize("prog_name", COMMANDS)
def test_help_shows_each_options_variable(prog_name: str) -> None:
    command = COMMANDS[prog_name]
    context = command.make_context(prog_name, [], resilient_parsing=True)
    # Wide enough that no help text is wrapped.
    result = CliRunner().invoke(command, ["--help"], terminal_width=400, max_content_width=400)
    assert result.exit_code == 0
    shown = set()
    for option in options_of(command):
        variable = f"VFX_{str(option.name).upper()}"
        record = option.get_help_record(context)
        assert record is not None and f"env var: {variable}" in record[1], option.opts
        help_text = record[1]
        assert help_text in result.output
        shown.add(variable)
    assert shown == VARIABLES[prog_name]


def test_enqueue_help_fits_two_screens_in_sections() -> None:
    result = CliRunner().invoke(enqueue.main, ["--help"], terminal_width=80)

    assert len(result.output.splitlines()) <= 100
    headings = [line for line in result.output.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert headings == ["Input:", "Model:", "Run:", "Queue:", "Local:", "Options:"]
    assert "Examples:" in result.output and "vfx-enqueue --input_dir videos/" in result.output


@pytest.mark.parametrize(
    ("command", "variable", "value", "parameter", "expected"),
    [
        (enqueue.main, "VFX_REVISION", "v1.0", "revision", "v1.0"),
        (worker.main, "VFX_NAME", "box7", "name", "box7"),
        (status.main, "VFX_JSON", "1", "json", True),
        (download.main, "VFX_BASE_URL", "http://mirror/ckpt", "base_url", "http://mirror/ckpt"),
        (download.main, "VFX_TIMEOUT_SECONDS", "7", "timeout_seconds", 7.0),
    ],
)
def test_renamed_variables_reach_their_parameter(
    monkeypatch: pytest.MonkeyPatch,
    command: click.Command,
    variable: str,
    value: str,
    parameter: str,
    expected: object,
) -> None:
    monkeypatch.setenv(variable, value)

    context = command.make_context(command.name or "", [])

    assert context.params[parameter] == expected
    assert context.get_parameter_source(parameter) == ParameterSource.ENVIRONMENT


def test_vfx_json_prints_json(redis_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        status.main, ["--output_dir", str(tmp_path)], env={"VFX_BROKER_URL": redis_url, "VFX_JSON": "1"}
    )

    assert result.exit_code == 0, result.output
    totals = json.loads(result.output)["totals"]
    assert totals == {"queued": 0, "running": 0, "done": 0, "failed": 0, "stranded": 0}


def sample_value(option: click.Option) -> list[str]:
    if option.is_flag:
        return []
    if isinstance(option.type, click.Choice):
        return [str(option.type.choices[-1])]
    if isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType)):
        return ["3"]
    return ["somewhere"]


# vfx-export is new: it has no option the original tool spelled with underscores.
@pytest.mark.parametrize("prog_name", [name for name in COMMANDS if name != "vfx-export"])
def test_both_spellings_are_accepted(prog_name: str) -> None:
    command = COMMANDS[prog_name]
    respelled = [o for o in options_of(command) if isinstance(o, VfxOption) and o.other_spellings]
    assert respelled, "every command has options with the original tool's underscores"
    for option in respelled:
        for spelling in option.opts:
            context = command.make_context(prog_name, [spelling, *sample_value(option)])
            source = context.get_parameter_source(str(option.name))
            assert source == ParameterSource.COMMANDLINE, spelling


def test_original_tool_spellings() -> None:
    args = """--input_dir in --output_dir out --batch_size 4 --num_clips_per_video 2 --crop_type center
    --clip_sampling uniform --force_stop_after_n_videos 5 --check_progress done.txt""".split()

    params = enqueue.main.make_context("vfx-enqueue", args).params

    assert params["input_dir"] == "in" and params["output_dir"] == "out" and params["batch_size"] == 4
    assert params["num_clips_per_video"] == 2 and params["crop_type"] == "center"
    assert params["clip_sampling"] == "uniform" and params["force_stop_after_n_videos"] == 5
    assert params["check_progress"] == "done.txt"


@pytest.mark.parametrize("command", [status.main, enqueue.main])
def test_unreachable_broker_exits_2_with_an_error_line(command: click.Command, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    tmp_path.joinpath("in").mkdir()
    args = ["--input_dir", str(tmp_path / "in")] if command is enqueue.main else []

    result = CliRunner().invoke(command, [*args, "--output_dir", str(tmp_path)], env={"VFX_BROKER_URL": url})

    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"Error: Cannot reach Redis at {url}")


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (WaitTimeoutError("waited"), 4),
        (ConfigurationError("bad"), 2),
        (BrokerUnavailableError("no Redis"), 2),
        (LocalWorkersDiedError("gone"), 2),
        (CheckpointNotFoundError("no weights"), 2),
    ],
)
def test_error_kinds_map_to_exit_codes(error: VfxError, exit_code: int) -> None:
    cli = cli_error(error)

    assert cli.exit_code == exit_code and cli.format_message() == str(error)
