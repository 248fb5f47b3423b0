"""``--help`` in sections, one line of names per option: what ``--help`` shows, and only that.

Options carry the name of their section; a command prints one section per name, in the order
the options are declared. An option spelled two ways (``--input_dir`` and ``--input-dir``, the
original tool's name and the usual one) is listed under its first spelling only, which keeps the
name column narrow enough for the help text to stay beside it at 80 columns.
"""

from __future__ import annotations

from typing import Any

import click


class VfxOption(click.Option):
    """An option that shows its ``VFX_*`` variable in ``--help`` and names its help section."""

    def __init__(self, *args: Any, group: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)
        #: Title of the ``--help`` section listing this option; ``None``: the last one, "Options".
        self.group = group
        #: Spellings that differ from an earlier one only by ``-`` for ``_`` (left out of ``--help``).
        self.other_spellings: list[str] = []
        seen: set[str] = set()
        for name in self.opts:
            normalized = name.replace("_", "-")
            if normalized in seen:
                self.other_spellings.append(name)
            seen.add(normalized)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        names, help_text = record
        for name in self.other_spellings:
            names = names.replace(f", {name}", "", 1)  # click joins the spellings with ", "
        return names, help_text


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options in sections, in the order they first appear."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        options = [param for param in self.get_params(ctx) if isinstance(param, click.Option)]
        sections: dict[str, list[tuple[str, str]]] = {}
        ungrouped: list[tuple[str, str]] = []
        for option in options:
            record = option.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(option, VfxOption) and option.group is not None:
                sections.setdefault(option.group, []).append(record)
            else:
                ungrouped.append(record)  # --version, --help and options without a section
        if ungrouped:
            sections["Options"] = [*sections.pop("Options", []), *ungrouped]
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)
        respelled = [o for o in options if isinstance(o, VfxOption) and o.other_spellings]
        if respelled:
            shown = next(name for name in respelled[0].opts if name not in respelled[0].other_spellings)
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(
                    f"Options take - and _ alike: {shown} is also {respelled[0].other_spellings[0]}."
                )
