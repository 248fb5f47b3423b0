"""Static checks of docker-compose.yml, .env.example and deploy/Dockerfile.

Docker cannot run here, so these read the files as data: the services the issue asks for,
one distinct GPU per worker, Redis private and password-protected, no secret written in the
files, and every variable the compose file uses documented in .env.example.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_DIR = Path(__file__).resolve().parent.parent
COMPOSE_PATH = REPO_DIR / "docker-compose.yml"
ENV_EXAMPLE_PATH = REPO_DIR / ".env.example"
DOCKERFILE_PATH = REPO_DIR / "deploy" / "Dockerfile"

#: ``${NAME``, at any nesting depth (``${A:-${B}}`` names A and B).
VARIABLE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
#: ``$NAME`` without braces (``$$`` escapes a dollar for the container and is not a variable).
BARE_VARIABLE_RE = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
SECRET_WORDS = ("PASSWORD", "PASS", "SECRET", "TOKEN", "AUTH")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_PATH.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if name.startswith("worker")}


def all_strings(node: Any) -> list[str]:
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in all_strings(k) + all_strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return [node] if isinstance(node, str) else []


def env_example_names() -> list[str]:
    names = []
    for line in ENV_EXAMPLE_PATH.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split("=", 1)[0].strip())
    return names


def option_value(command: list[str], option: str) -> str:
    index = command.index(option)
    return command[index + 1]


def duration_seconds(value: str) -> int:
    """Seconds of a compose duration such as ``15m`` or ``1h30m``, after taking a ``${X:-default}``."""
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", value)
    value = match.group(1) if match else value
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsed duration {value!r}"
    return sum(int(n) * units[u] for n, u in parts)


def test_required_services_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "flower", "enqueue"} <= set(services)
    assert len(workers(services)) >= 1


def test_every_worker_is_pinned_to_its_own_gpu(services: dict[str, dict[str, Any]]) -> None:
    device_ids: list[str] = []
    names: list[str] = []
    for name, service in workers(services).items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, f"{name}: one device reservation per worker"
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert "count" not in devices[0], f"{name}: count and device_ids exclude each other"
        assert len(devices[0]["device_ids"]) == 1, f"{name}: exactly one GPU"
        device_ids += [str(d) for d in devices[0]["device_ids"]]
        command = service["command"]
        assert command[0] == "vfx-worker", name
        # The container sees only its reserved GPU, as index 0.
        assert option_value(command, "--gpu") == "0", name
        names.append(option_value(command, "--name"))
    assert len(set(device_ids)) == len(device_ids), f"GPUs shared between workers: {device_ids}"
    assert len(set(names)) == len(names), f"worker names repeat: {names}"


def test_each_worker_has_a_memory_limit(services: dict[str, dict[str, Any]]) -> None:
    # A runaway decode is OOM-killed inside its container (compose restarts it), not the box.
    for name, service in workers(services).items():
        assert service["mem_limit"].startswith("${VFX_WORKER_MEMORY:-"), name
        assert service["memswap_limit"] == service["mem_limit"], f"{name}: no swap beyond the limit"
        for variable in ("VFX_MAX_PIXELS", "VFX_MEMORY_LIMIT_MB", "VFX_HF_REPOS"):
            assert service["environment"][variable] == f"${{{variable}:-}}", (name, variable)


def test_workers_restart_on_failure_and_get_time_to_finish_a_video(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in workers(services).items():
        assert service["restart"] == "on-failure", name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM", name  # Celery's warm shutdown
        assert duration_seconds(service["stop_grace_period"]) >= 5 * 60, name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def redis_command(services: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
    """The redis service's ``redis-server`` arguments and the configuration it reads on stdin."""
    shell, flag, script = services["redis"]["command"]
    assert (shell, flag) == ("sh", "-c")
    first, *heredoc = script.splitlines()
    command, _, marker = first.partition(" <<")
    assert heredoc[-1] == marker, "the here-document ends the script"
    return shlex.split(command), "\n".join(heredoc[:-1])


def test_redis_is_private_persistent_and_password_protected(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert "ports" not in redis, "Redis must not be published to the host"
    command, stdin = redis_command(services)
    # The image's entrypoint (which hands /data to Redis and drops root) runs redis-server, which
    # reads the rest of its configuration on stdin ("-").
    assert command[:4] == ["exec", "docker-entrypoint.sh", "redis-server", "-"]
    assert option_value(command, "--appendonly") == "yes"
    assert option_value(command, "--appendfsync") == "everysec"
    assert option_value(command, "--maxmemory-policy") == "noeviction"
    # Without a cap, Redis grows until the machine swaps or the OOM killer takes it, queue and all.
    assert option_value(command, "--maxmemory").startswith("${REDIS_MAXMEMORY:-")
    # The password comes from the container's environment, on stdin: never on a command line.
    assert stdin == "requirepass $$REDIS_PASSWORD"
    assert "--requirepass" not in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert redis["healthcheck"]["test"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"]), "append-only file on a volume"


def test_the_redis_command_keeps_the_password_out_of_ps(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import redis

    from vfx_tasks.queue.processes.redis_server import find_redis_server, free_port

    # Given the redis service's command as compose hands it to the container ($$ is a $, defaults
    # filled in), a stand-in for the image's entrypoint that adds a test port and folder, and the
    # password in the environment,
    script = services["redis"]["command"][2].replace("$$", "$").replace("${REDIS_MAXMEMORY:-1gb}", "1gb")
    port, password = free_port(), "Pw" + "0123456789" * 3
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(find_redis_server())
    entrypoint = bin_dir / "docker-entrypoint.sh"
    entrypoint.write_text(f'#!/bin/sh\nexec "$@" --port {port} --bind 127.0.0.1 --dir {tmp_path} --save ""\n')
    entrypoint.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REDIS_PASSWORD": password}
    server = subprocess.Popen(["sh", "-c", script], env=env, cwd=tmp_path, start_new_session=True)
    try:
        # when it starts, then it answers only with that password,
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 30
        while not _answers(client):
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
            time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        # and the password is in no process's command line (what ps shows).
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert all(password not in cmdline for cmdline in _command_lines())
    finally:
        server.kill()
        server.wait(30)


def _answers(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_flower_has_basic_auth_persistent_state_and_port_5555(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    command = flower["command"]
    assert command[:4] == ["celery", "-A", "vfx_tasks", "flower"]
    assert "--persistent=True" in command
    db_path = next(part.split("=", 1)[1] for part in command if part.startswith("--db="))
    mounts = [volume.split(":")[1] for volume in flower["volumes"]]
    assert any(db_path.startswith(mount + "/") for mount in mounts), f"{db_path} is not on a volume"
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    assert any(str(port).endswith(":5555") for port in flower["ports"])
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"


def test_enqueue_runs_on_demand(services: dict[str, dict[str, Any]]) -> None:
    enqueue = services["enqueue"]
    assert enqueue["profiles"], "under a profile, so `docker compose up` does not start it"
    # so that `docker compose run enqueue --input_dir ...` appends the options to vfx-enqueue
    assert enqueue["entrypoint"] == ["vfx-enqueue"]


def test_commands_are_console_scripts_of_the_package(services: dict[str, dict[str, Any]]) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["scripts"]
    used = {s["entrypoint"][0] for s in services.values() if "entrypoint" in s}
    used |= {s["command"][0] for s in workers(services).values()}
    assert used <= set(scripts), f"not console scripts: {used - set(scripts)}"


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for text in all_strings(compose):
        # Credentials in URLs come from variables.
        for credentials in re.findall(r"://([^@/\s]*)@", text):
            assert credentials.startswith(":${") or credentials.startswith("${"), text
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if any(word in key.upper() for word in SECRET_WORDS):
                assert str(value).startswith("${"), f"{name}: {key} is hard-coded"
        command = [str(part) for part in service.get("command", [])]
        assert "--requirepass" not in " ".join(command), f"{name}: a password on a command line"


def test_every_variable_is_listed_in_env_example(compose: dict[str, Any]) -> None:
    text = COMPOSE_PATH.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = set(VARIABLE_RE.findall(body))
    listed = env_example_names()
    assert not BARE_VARIABLE_RE.findall(body), "use ${NAME}, not $NAME"
    assert used <= set(listed), f"missing from .env.example: {sorted(used - set(listed))}"
    assert set(listed) <= used, f"listed in .env.example but unused: {sorted(set(listed) - used)}"
    assert len(listed) == len(set(listed)), "a variable is listed twice"


def test_env_example_holds_no_secrets() -> None:
    for line in ENV_EXAMPLE_PATH.read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        if any(word in name.upper() for word in SECRET_WORDS):
            assert value == "", f"{name} must be empty in .env.example"


def test_dockerfile_runs_as_a_non_root_user_with_volumes() -> None:
    instructions = [
        line.split(None, 1)
        for line in DOCKERFILE_PATH.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    users = [args.strip() for keyword, *rest in instructions if keyword.upper() == "USER" for args in rest]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    args = [rest[0] for keyword, *rest in instructions if keyword.upper() == "ARG"]
    base = next(arg for arg in args if arg.startswith("BASE_IMAGE="))
    assert "pytorch/pytorch" in base and "cuda" in base
    volumes = " ".join(rest[0] for keyword, *rest in instructions if keyword.upper() == "VOLUME")
    assert "/models" in volumes and "/home/vfx/.cache/huggingface" in volumes
    env = " ".join(rest[0] for keyword, *rest in instructions if keyword.upper() == "ENV")
    assert "VFX_PRETRAINED_DIR=/models" in env and "HF_HOME=/home/vfx/.cache/huggingface" in env


def test_redis_is_published_only_through_the_override() -> None:
    override = yaml.safe_load((REPO_DIR / "deploy" / "redis-published.yml").read_text())
    assert list(override["services"]) == ["redis"]
    assert override["services"]["redis"] == {"ports": ["6379:6379"]}


def default_of(value: str) -> str:
    """``/data`` for ``${VFX_INPUT_ROOTS:-/data}``; the value itself when it is not a variable."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def test_workers_read_and_write_only_under_data_by_default(services: dict[str, dict[str, Any]]) -> None:
    for name, worker in workers(services).items():
        mounts = {re.sub(r"\$\{[^}]*\}", "host", volume).split(":")[1] for volume in worker["volumes"]}
        environment = worker["environment"]
        for variable in ("VFX_INPUT_ROOTS", "VFX_OUTPUT_ROOTS"):
            assert default_of(environment[variable]) == "/data", (name, variable)
        assert "/data" in mounts, name


def test_flower_is_published_on_loopback_by_default(services: dict[str, dict[str, Any]]) -> None:
    # A Flower login can send tasks: by default only this box reaches the dashboard.
    (port,) = services["flower"]["ports"]
    host, published, container = re.fullmatch(r"(\$\{[^}]+\}|[^:]+):(\$\{[^}]+\}|\d+):(\d+)", port).groups()
    assert default_of(host) == "127.0.0.1" and default_of(published) == "5555" and container == "5555"
