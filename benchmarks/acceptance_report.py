"""What ``gpu_acceptance.py`` writes: the machine it ran on, and every table as markdown and JSON.

The report is rewritten after every step, so a run cut short still leaves what it measured.
Figures are formatted to be pasted into benchmarks/README.md or docs/throughput.md as they are.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: The two files every run leaves in its output folder (the logs are named by their steps).
MARKDOWN, JSON = "gpu-acceptance.md", "gpu-acceptance.json"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        found = pynvml.nvmlSystemGetDriverVersion()
        return found.decode() if isinstance(found, bytes) else str(found)
    except Exception:  # no pynvml or no driver: ask the tool instead
        line = _first_line(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        return line or "unknown (no pynvml, no nvidia-smi)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, *, repo: Path) -> dict[str, str]:
    """The machine and software the figures belong to, as label -> text."""
    now = datetime.datetime.now(datetime.timezone.utc)
    found: dict[str, str] = {"date (UTC)": now.strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device.index if device.index is not None else 0)
        found["GPU"] = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability "
                        f"{props.major}.{props.minor}, {props.multi_processor_count} SMs")
        found["driver"] = _driver_version()
    else:
        found["GPU"] = "none: --dry-run on the CPU (no GPU figures)"
    found["torch"] = torch.__version__
    found["CUDA (torch build)"] = str(torch.version.cuda)
    found["cuDNN"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"
    found["TF32"] = (f"cuDNN convolutions {torch.backends.cudnn.allow_tf32}, "
                     f"matmul {torch.backends.cuda.matmul.allow_tf32}")
    cores = len(os.sched_getaffinity(0))
    found["CPU"] = f"{_cpu_model()}, {cores} cores usable (os.cpu_count {os.cpu_count()})"
    found["Python"] = platform.python_version()
    found["decord"] = _version("decord") or "not installed"
    found["PyAV"] = _version("av") or "not installed: no PyAV rows; videos are MPEG-4 Part 2"
    from nvdec import nvdec_version

    found["NVDEC"] = nvdec_version() if device.type == "cuda" else "not tried on the CPU"
    pynvml = _version("nvidia-ml-py") or _version("pynvml")
    found["pynvml"] = (f"nvidia-ml-py {pynvml}" if pynvml
                       else "not installed: GPU busy % and NVML memory columns are empty")
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    found["vfx_tasks"] = f"{_version('vfx_tasks') or '?'}, commit {commit or 'unknown (no git checkout)'}"
    return found


@dataclass
class Report:
    """Everything measured so far; :meth:`write` puts it in ``out`` as markdown and JSON."""

    out: Path
    environment: dict[str, str] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)
    steps: list[dict[str, object]] = field(default_factory=list)
    tables: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    def command(self, argv: list[str], *, shown: str | None = None) -> None:
        self.commands.append(shown or shlex.join(argv))

    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"environment": self.environment, "settings": self.settings, "steps": self.steps,
                "tables": self.tables, "commands": self.commands}
        (self.out / JSON).write_text(json.dumps(data, indent=2, default=str))
        path = self.out / MARKDOWN
        path.write_text(self.markdown())
        return path

    def markdown(self) -> str:
        parts = ["# GPU acceptance run", "", key_value_table(self.environment), "",
                 "## Settings", "", key_value_table({k: str(v) for k, v in self.settings.items()}), "",
                 "## Steps", "", markdown_table(self.steps)]
        for title, rows in self.tables.items():
            parts += ["", f"## {title}", "", markdown_table(rows)]
        parts += ["", "## Commands", "", "```", *self.commands, "```", ""]
        return "\n".join(parts)


def key_value_table(values: dict[str, str]) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in values.items()]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Columns in first-seen order; floats to 3 significant digits, None as '-'."""
    if not rows:
        return "(nothing measured)"
    header: list[str] = []
    for row in rows:
        header += [key for key in row if key not in header]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")
