"""Reading the deployment files as docker compose, Docker and Grafana read them: the compose
file with compose's variable interpolation, the env file, the Dockerfile's stages and build
context, the Grafana provisioning. No Docker engine runs in the test environment, so the tests
check these files by what the tools would do with them."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_FILE = ROOT / "config" / ".env.dev"
GRAFANA = ROOT / "config" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR; $$ is a `$`.
_REFERENCE = re.compile(
    r"\$(?:\$|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>\w+))"
)


class MissingVariable(ValueError):
    """What compose reports for `${VAR:?message}` when VAR is unset or empty."""


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=value lines (comments and blank lines skipped), as compose's --env-file reads them."""
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        assert separator and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path}:{number}: {line!r}"
        values[key] = value
    return values


def referenced_variables(text: str) -> set[str]:
    return {m.group("braced") or m.group("plain") for m in _REFERENCE.finditer(text)} - {None}


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation of every string in a loaded compose document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        unset_or_empty = current is None or current == ""
        if op == ":-":
            return arg if unset_or_empty else current
        if op == "-":
            return arg if current is None else current
        if (op == ":?" and unset_or_empty) or (op == "?" and current is None):
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return current or ""

    return _REFERENCE.sub(replace, value)


def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def load_compose() -> dict[str, Any]:
    """The compose file as parsed YAML (anchors and merge keys resolved), not interpolated."""
    return yaml.safe_load(compose_text())


def resolved_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose --env-file config/.env.dev` sees it."""
    return interpolate(load_compose(), read_env_file() if env is None else env)


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARD_FILES}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@dataclass
class Stage:
    """One `FROM base [AS name]` and the instructions up to the next FROM."""

    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            words = rest.split()
            base = next(word for word in words if not word.startswith("--"))
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else base
            stages.append(Stage(name, base))
        elif stages:
            stages[-1].steps.append((keyword, rest))
    return stages


def image_stages(target: str | None = None, path: Path = DOCKERFILE) -> list[Stage]:
    """The stages an image built with `--target target` (default: the last stage) is made
    of, from its base image up: the stage and the earlier stages it is built FROM."""
    stages = dockerfile_stages(path)
    by_name = {stage.name: stage for stage in stages}
    current: Stage | None = by_name[target] if target else stages[-1]
    chain: list[Stage] = []
    while current is not None:
        chain.insert(0, current)
        current = by_name.get(current.base)
    return chain


def image_steps(target: str | None = None, path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The instructions that make that image, its base stages' first."""
    return [step for stage in image_stages(target, path) for step in stage.steps]


def dockerignore_sends(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    included = True
    for pattern in rules:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            included = negated
    return included
