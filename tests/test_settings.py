"""Queue settings: environment parsing and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfx_tasks.errors import ConfigurationError
from vfx_tasks.settings import Settings


def test_queue_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.result_backend == settings.broker_url
    assert settings.visibility_timeout_seconds == 12 * 3600
    assert settings.max_redeliveries == 3


def test_environment_values_are_typed_and_round_trip() -> None:
    environ = {
        "VFX_BROKER_URL": "redis://h:1/2",
        "VFX_MAX_REDELIVERIES": "5",
        "VFX_VISIBILITY_TIMEOUT_SECONDS": "60",
    }
    settings = Settings.from_env(environ)
    assert (settings.broker_url, settings.max_redeliveries, settings.visibility_timeout_seconds) == (
        "redis://h:1/2",
        5,
        60,
    )
    assert settings.result_backend == "redis://h:1/2"
    assert Settings.from_env(settings.to_environ()) == settings


@pytest.mark.parametrize("value", ["many", "-1"])
def test_bad_numbers_say_which_variable(value: str) -> None:
    with pytest.raises(ConfigurationError, match="max_redeliveries"):
        Settings.from_env({"VFX_MAX_REDELIVERIES": value})


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("True", True), ("0", False),
                                                 ("off", False), ("False", False)])
def test_keep_downloads_reads_yes_and_no(value: str, expected: bool) -> None:
    settings = Settings.from_env({"VFX_KEEP_DOWNLOADS": value})
    assert settings.keep_downloads is expected
    assert Settings.from_env(settings.to_environ()).keep_downloads is expected


def test_keep_downloads_rejects_other_words() -> None:
    with pytest.raises(ConfigurationError, match="keep_downloads.*1/true/t/yes/y/on"):
        Settings.from_env({"VFX_KEEP_DOWNLOADS": "maybe"})


def test_roots_are_empty_by_default_and_parsed_from_colons_or_commas() -> None:
    assert Settings.from_env({}).input_roots == () and Settings.from_env({}).output_roots == ()
    settings = Settings.from_env(
        {"VFX_INPUT_ROOTS": "/data/videos:/mnt/b", "VFX_OUTPUT_ROOTS": "/data, /out"}
    )
    assert settings.input_roots == (Path("/data/videos"), Path("/mnt/b"))
    assert settings.output_roots == (Path("/data"), Path("/out"))
    # They travel to worker processes as variables and come back the same.
    assert Settings.from_env(settings.to_environ()) == settings
    assert settings.with_overrides(output_roots=["/x"]).output_roots == (Path("/x"),)


def test_relative_roots_are_refused_with_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"output_roots \(features\).*absolute.*VFX_OUTPUT_ROOTS"):
        Settings.from_env({"VFX_OUTPUT_ROOTS": "features"})
