"""The documentation: the generated configuration page is current, links resolve, the README is short."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [
    ROOT / "README.md",
    *sorted(DOCS.glob("*.md")),
    *(ROOT / folder / "README.md" for folder in ("benchmarks", "deploy", "pretrained")),
]

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_configuration", DOCS / "make_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_matches_the_code() -> None:
    generator = load_generator()
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator.render_page(), (
        f"docs/configuration.md is out of date; regenerate it with: {generator.COMMAND}"
    )


def test_generator_reads_auto_envvar_prefix_and_explicit_envvars() -> None:
    # Given a command that derives variables from a prefix, with one explicit exception
    @click.command(context_settings={"auto_envvar_prefix": "VFX"})
    @click.option("--name", "-n")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--base-url", envvar="VFX_MIRROR")
    @click.option("--secret", allow_from_autoenv=False)
    def command(name: str, as_json: bool, base_url: str, secret: str) -> None:
        """A command."""

    generator = load_generator()
    params = {param.name: param for param in command.params}
    # Then each option reads what click would read
    assert generator.option_envvars(command, params["name"]) == ["VFX_NAME"]
    assert generator.option_envvars(command, params["as_json"]) == ["VFX_AS_JSON"]
    assert generator.option_envvars(command, params["base_url"]) == ["VFX_MIRROR"]
    assert generator.option_envvars(command, params["secret"]) == []


def test_every_setting_has_its_comment() -> None:
    generator = load_generator()
    from vfx_tasks.settings import Settings

    comments = generator.field_comments(Settings)
    assert comments["broker_url"] == "Redis URL of the Celery broker (and of the done-ledger)."
    missing = [name for name in Settings.__dataclass_fields__ if not comments.get(name)]
    assert not missing, f"Settings fields without a #: comment above them: {missing}"


def test_every_console_script_is_documented() -> None:
    names = [name for name, _ in load_generator().console_commands()]
    assert {"vfx-enqueue", "vfx-worker", "vfx-status", "vfx-download-models"} <= set(names)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target} (no file {destination})")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading #{anchor} in {destination.name})")
    assert not broken, f"Broken links in {page.relative_to(ROOT)}: {broken}"


def test_readme_is_short_and_starts_with_the_ci_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 120, (
        "README.md should stay under about 120 lines; move detail to docs/."
    )
    first_pytest = next(line.strip() for line in readme.splitlines() if "pytest" in line)
    assert first_pytest == ".venv/bin/python -m pytest"
    assert first_pytest in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def links(page: Path) -> list[str]:
    """Link and image targets of a Markdown page, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    return _LINK.findall(text)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(heading) for heading in _HEADING.findall(text)}


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
