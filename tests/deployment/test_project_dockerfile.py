"""The project image (Dockerfile), checked by reading it (no Docker engine in the test
environment): multi-stage, pinned bases matching the virtual server's image, dependencies from
uv.lock without dev tools, the production dagster.yaml/workspace.yaml in DAGSTER_HOME, a
non-root user, and a build context (.dockerignore) that holds what it copies and no secrets."""

from __future__ import annotations

import fnmatch
import re

from deployment_files import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions(path=DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def copied_images(path=DOCKERFILE) -> set[str]:
    return {
        match.group(1)
        for keyword, rest in instructions(path)
        if keyword == "COPY"
        for match in [re.search(r"--from=(\S+)", rest)]
        if match and ":" in match.group(1)
    }


def test_multi_stage_with_pinned_bases_like_the_virtual_server_image():
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    names = [rest.split()[-1] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(bases) >= 2 and len(set(names)) == len(names), "one build and one runtime stage"
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base) for base in bases), bases
    [virtual_base] = [r for k, r in instructions(ROOT / "virtual_server/Dockerfile") if k == "FROM"]
    assert set(bases) == {virtual_base}
    assert (
        copied_images()
        == copied_images(ROOT / "virtual_server/Dockerfile")
        == {"ghcr.io/astral-sh/uv:0.13.9"}
    )
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8")


def test_dependencies_come_from_the_lock_file_without_dev_tools():
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 2
    assert all("--locked" in run and "--no-dev" in run for run in syncs)
    assert "--no-install-project" in syncs[0]  # the dependency layer is cached separately
    assert "--no-editable" in syncs[1]  # the runtime stage needs the virtualenv only
    assert not any(re.search(r"\bpip install\b|uv pip install|uv add", run) for run in runs)


def test_the_runtime_stage_has_the_virtualenv_and_no_build_tools():
    runtime = stages()[-1]
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    build_stage = instructions()[0][1].split()[-1]
    assert f"--from={build_stage} /app/.venv /app/.venv" in copies
    assert not any("astral-sh/uv" in rest for rest in copies), "uv stays in the build stage"
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert 'PATH="/app/.venv/bin:$PATH"' in env


def test_production_instance_files_in_dagster_home():
    runtime = stages()[-1]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    home = re.search(r"DAGSTER_HOME=(\S+)", env).group(1)
    assert f"COPY dagster.yaml workspace.yaml {home}/" in [f"{k} {r}" for k, r in runtime]
    assert ("WORKDIR", home) in runtime  # `-w workspace.yaml` is found there
    spool = re.search(r"ENERGYMON_SPOOL_DIR=(\S+)", env).group(1)
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert spool in runs and f"{home}/storage" in runs and "chown 10001:10001" in runs


def test_it_runs_as_a_non_root_user_and_defaults_to_the_code_server():
    steps = stages()[-1]
    users = [(index, rest) for index, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the services would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(keyword != "RUN" for keyword, _ in steps[index:])  # nothing runs as root after
    [cmd] = [rest for keyword, rest in steps if keyword == "CMD"]
    assert cmd.startswith('["sh", "-c", ') and "exec dagster api grpc" in cmd


def dockerignore_sends(path: str) -> bool:
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


def test_everything_copied_exists_and_passes_the_dockerignore():
    for dockerfile in (DOCKERFILE, ROOT / "virtual_server" / "Dockerfile"):
        for keyword, rest in instructions(dockerfile):
            if keyword == "COPY" and "--from=" not in rest:
                *sources, _destination = rest.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert dockerignore_sends(source), f"{source} is excluded by .dockerignore"
    for secret_or_local in (".venv", ".energymon", ".git", "config/.env.dev", "tests", "bench"):
        assert not dockerignore_sends(secret_or_local), secret_or_local
