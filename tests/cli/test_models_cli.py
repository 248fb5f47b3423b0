"""``vfx-models`` / ``vfx-download-models --list``, and downloading model-zoo checkpoints by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.models.test_download import CheckpointServer, payload, server  # noqa: F401 (fixtures)
from vfx_tasks.cli import download as download_cli
from vfx_tasks.cli import models as models_cli
from vfx_tasks.cli import status as status_cli
from vfx_tasks.errors import CheckpointDownloadError
from vfx_tasks.models import ModelSpec, get_model_spec, model_names, zoo_entries
from vfx_tasks.models.standin_checkpoint import write_standin_checkpoint


def rows_by_name(output: str) -> dict[str, list[str]]:
    """The table's rows as cells, cut where the header's columns start, by model name."""
    header, *lines = output.split("\n\n")[0].splitlines()
    columns = ("NAME", "ALIASES", "FAMILY", "D ", "INPUT", "CHECKPOINT", "ON DISK")
    starts = [header.index(column) for column in columns] + [None]
    return {
        line.split()[0]: [line[start:end].strip() for start, end in zip(starts, starts[1:], strict=False)]
        for line in lines
    }


def test_lists_every_model_with_its_family_size_input_and_weights(tmp_path: Path) -> None:
    # Given a pretrained folder that holds X3D-S's checkpoint and nothing else
    x3d = get_model_spec("x3d-s")
    size_mb = write_standin_checkpoint(x3d, tmp_path).stat().st_size / 1e6

    result = CliRunner().invoke(models_cli.main, ["--pretrained-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    rows = rows_by_name(result.output)
    assert set(rows) == set(model_names()) | set(zoo_entries())
    assert list(rows)[:2] == model_names()  # the two defaults first
    assert rows[x3d.name] == [
        x3d.name, "x3d, x3d-s", "x3d", "432", "3x13x182x182 NCTHW", f"{size_mb:.0f} MB", "yes"
    ]
    tsm = rows[get_model_spec("tsm").name]
    assert tsm[2:5] == ["tsm", "2048", "8x3x224x224 NCHW"]
    assert tsm[-2].startswith("~") and tsm[-1] == "no"
    assert rows[get_model_spec("slowfast").name][3] == "2304"
    # The models that cannot run here are listed with the reason
    assert "tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb: Model" in result.output
    assert "mmcv.ops.tin_shift" in result.output


def test_family_filter_and_unknown_family(tmp_path: Path) -> None:
    result = CliRunner().invoke(models_cli.main, ["--family", "videomae", "--pretrained-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert {row[2] for row in rows_by_name(result.output).values()} == {"videomae"}

    result = CliRunner().invoke(models_cli.main, ["--family", "resnet"])
    assert result.exit_code == 2
    assert "Unknown family ('resnet'). Supported values are c2d, c3d" in result.output


def test_download_models_list_prints_the_same_table(tmp_path: Path) -> None:
    listed = CliRunner().invoke(download_cli.main, ["--list", "--pretrained-dir", str(tmp_path)])
    models = CliRunner().invoke(models_cli.main, ["--pretrained-dir", str(tmp_path)])
    assert listed.exit_code == 0 and listed.output == models.output
    assert not any(tmp_path.iterdir())  # listing downloads nothing


def test_zoo_names_download_from_their_metafile_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requested: list[str] = []

    def offline(spec: ModelSpec, *args: object, **kwargs: object) -> None:
        requested.append(spec.checkpoint_url)
        raise CheckpointDownloadError(f"Cannot reach {spec.checkpoint_url} (offline).")

    monkeypatch.setattr(download_cli, "download_checkpoint", offline)
    monkeypatch.delenv("VFX_BASE_URL", raising=False)

    names = ["x3d-s", "videomae", "tsm"]
    result = CliRunner().invoke(download_cli.main, [*names, "--pretrained-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert requested == [zoo_entries()[get_model_spec(name).name].weights_url for name in names]
    for url in requested:
        assert url.startswith("https://download.openmmlab.com/mmaction/v1.0/recognition/")
        assert url in result.stderr


def test_a_zoo_checkpoint_is_verified_against_its_name(
    server: CheckpointServer, payload: bytes, tmp_path: Path  # noqa: F811
) -> None:
    # Given a mirror that serves other bytes under X3D-S's official file name
    spec = get_model_spec("x3d-s")
    server.serve(spec.checkpoint_filename, payload)

    result = CliRunner().invoke(
        download_cli.main, ["x3d-s", "--pretrained-dir", str(tmp_path), "--base-url", server.base_url]
    )

    # Then it was fetched from <mirror>/<official file name>, refused for its hash, and deleted
    assert result.exit_code == 1
    assert server.requests[0][0] == f"/ckpt/{spec.checkpoint_filename}"
    assert "sha256" in result.stderr and "623825a0" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x3d-ss", "Unknown model ('x3d-ss')"),
        ("tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb", "cannot run here"),
    ],
)
def test_unknown_or_unusable_names_exit_2_before_any_download(
    name: str, message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(download_cli.main, [name, "--pretrained-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert not any(tmp_path.iterdir())


def test_model_option_refuses_a_model_that_cannot_run_here(tmp_path: Path) -> None:
    # --model is checked the same way by every command that takes it
    name = "tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb"
    result = CliRunner().invoke(status_cli.main, ["--output-dir", str(tmp_path), "--model", name])
    assert result.exit_code == 2
    assert "cannot run here" in result.output and "tin_shift" in result.output
