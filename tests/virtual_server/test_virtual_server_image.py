"""The virtual server's container image, checked by reading its Dockerfile (no Docker engine
in the test environment): pinned bases, locked dependencies, a non-root user, and a build
context that holds what the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT / "virtual_server" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_base_images_are_pinned_to_exact_versions():
    steps = instructions()
    (base,) = [rest for keyword, rest in steps if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    images = [base] + [
        match.group(1)
        for keyword, rest in steps
        if keyword == "COPY"
        for match in [re.search(r"--from=(\S+)", rest)]
        if match
    ]
    assert any(image.startswith("ghcr.io/astral-sh/uv:") for image in images)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and re.fullmatch(r"\d+(\.\d+)+(-[a-z0-9]+)*", tag), f"{image} is not pinned"
    assert "latest" not in DOCKERFILE.read_text()


def test_dependencies_come_from_the_lock_file_without_dev_tools():
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 2
    assert all("--locked" in run and "--no-dev" in run for run in syncs)
    assert "--no-install-project" in syncs[0]  # the dependency layer is cached separately
    assert not any(re.search(r"\bpip install\b|uv pip install|uv add", run) for run in runs)


def test_it_runs_as_a_non_root_user_and_starts_the_server():
    steps = instructions()
    users = [(index, rest) for index, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the server would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(keyword != "RUN" for keyword, _ in steps[index:])  # nothing runs as root after
    (cmd,) = [rest for keyword, rest in steps if keyword == "CMD"]
    assert cmd == '["python", "-m", "virtual_server"]'  # exec form: SIGTERM reaches Python
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert "VIRTUAL_SERVER_LISTEN_HOST=0.0.0.0" in env and "VIRTUAL_SERVER_PORT=502" in env


def test_everything_copied_exists_and_passes_the_dockerignore():
    ignore = [
        line.strip()
        for line in (PROJECT / "virtual_server" / "Dockerfile.dockerignore")
        .read_text()
        .splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for pattern in ignore:
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                included = negated
        return included

    for keyword, rest in instructions():
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _destination = rest.split()
            for source in sources:
                assert (PROJECT / source).exists(), source
                assert sent(source), f"{source} is excluded by Dockerfile.dockerignore"
    assert not sent(".venv") and not sent(".energymon") and not sent("config/.env.dev")
