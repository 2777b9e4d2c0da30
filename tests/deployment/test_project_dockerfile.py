"""The Dockerfile, checked by reading it (no Docker engine in the test environment): one build
stage for both images (the project image, its default target, and the virtual server's),
pinned bases, dependencies from uv.lock without dev tools, the production dagster.yaml and
workspace.yaml in DAGSTER_HOME, a non-root user, and a build context (.dockerignore) that holds
what it copies and no secrets. The virtual server's own target: test_virtual_server_image.py."""

from __future__ import annotations

import re

from deployment_files import (
    DOCKERFILE,
    ROOT,
    dockerfile_instructions,
    dockerfile_stages,
    dockerignore_sends,
    image_stages,
    image_steps,
)


def copied_images() -> set[str]:
    return {
        match.group(1)
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY"
        for match in [re.search(r"--from=(\S+)", rest)]
        if match and ":" in match.group(1)
    }


def test_one_build_stage_for_both_images_on_pinned_bases():
    stages = dockerfile_stages()
    names = [stage.name for stage in stages]
    assert len(set(names)) == len(names) and names[-1] == "runtime"  # the default target
    images = {stage.base for stage in stages if stage.base not in names}
    assert len(images) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", *images), images
    assert copied_images() == {"ghcr.io/astral-sh/uv:0.13.9"}
    assert "latest" not in DOCKERFILE.read_text(encoding="utf-8")
    # Both images copy their virtualenv from the one build stage; neither syncs on its own.
    syncs = [stage.name for stage in stages for k, rest in stage.steps if "uv sync" in rest]
    assert set(syncs) == {"build"}
    for target in ("runtime", "virtual-server"):
        copies = [rest for keyword, rest in image_steps(target) if keyword == "COPY"]
        assert "--from=build /app/.venv /app/.venv" in copies, target
    assert not (ROOT / "virtual_server" / "Dockerfile").exists()


def test_dependencies_come_from_the_lock_file_without_dev_tools():
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert len(syncs) == 2
    assert all("--locked" in run and "--no-dev" in run for run in syncs)
    assert "--no-install-project" in syncs[0]  # the dependency layer is cached separately
    assert "--no-editable" in syncs[1]  # the images need the virtualenv only
    assert not any(re.search(r"\bpip install\b|uv pip install|uv add", run) for run in runs)


def test_the_runtime_image_has_the_virtualenv_and_no_build_tools():
    assert "build" not in [stage.name for stage in image_stages()]
    copies = [rest for keyword, rest in image_steps() if keyword == "COPY"]
    assert not any("astral-sh/uv" in rest for rest in copies), "uv stays in the build stage"
    env = " ".join(rest for keyword, rest in image_steps() if keyword == "ENV")
    assert 'PATH="/app/.venv/bin:$PATH"' in env


def test_production_instance_files_in_dagster_home():
    runtime = image_steps()
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    home = re.search(r"DAGSTER_HOME=(\S+)", env).group(1)
    assert f"COPY dagster.yaml workspace.yaml {home}/" in [f"{k} {r}" for k, r in runtime]
    assert [rest for keyword, rest in runtime if keyword == "WORKDIR"][-1] == home
    spool = re.search(r"ENERGYMON_SPOOL_DIR=(\S+)", env).group(1)
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert spool in runs and f"{home}/storage" in runs and "chown 10001:10001" in runs


def test_it_runs_as_a_non_root_user_and_defaults_to_the_code_server():
    steps = image_steps()
    users = [(index, rest) for index, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the services would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(keyword != "RUN" for keyword, _ in steps[index:])  # nothing runs as root after
    [cmd] = [rest for keyword, rest in steps if keyword == "CMD"]
    assert cmd.startswith('["sh", "-c", ') and "exec dagster api grpc" in cmd


def test_everything_copied_exists_and_passes_the_dockerignore():
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _destination = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert dockerignore_sends(source), f"{source} is excluded by .dockerignore"
    for secret_or_local in (".venv", ".energymon", ".git", "config/.env.dev", "tests", "bench"):
        assert not dockerignore_sends(secret_or_local), secret_or_local
