"""The virtual server's image, the Dockerfile's `virtual-server` target, checked by reading it
(no Docker engine in the test environment): the project's virtualenv from the shared build
stage, a non-root user, the server as PID 1 on 0.0.0.0:502, and a build context that holds what
it copies."""

from __future__ import annotations

from deployment_files import ROOT, dockerignore_sends, image_stages, image_steps

TARGET = "virtual-server"


def test_built_from_the_projects_build_stage():
    stages = [stage.name for stage in image_stages(TARGET)]
    assert stages[-1] == TARGET and "build" not in stages
    copies = [rest for keyword, rest in image_steps(TARGET) if keyword == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"]  # no sources, no uv
    env = " ".join(rest for keyword, rest in image_steps(TARGET) if keyword == "ENV")
    assert 'PATH="/app/.venv/bin:$PATH"' in env


def test_it_runs_as_a_non_root_user_and_starts_the_server():
    steps = image_steps(TARGET)
    users = [(index, rest) for index, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "no USER: the server would run as root"
    index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert all(keyword != "RUN" for keyword, _ in steps[index:])  # nothing runs as root after
    (cmd,) = [rest for keyword, rest in steps if keyword == "CMD"]
    assert cmd == '["python", "-m", "virtual_server"]'  # exec form: SIGTERM reaches Python
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    assert "VIRTUAL_SERVER_LISTEN_HOST=0.0.0.0" in env and "VIRTUAL_SERVER_PORT=502" in env
    assert ("EXPOSE", "502") in steps
    assert any(keyword == "HEALTHCHECK" for keyword, _ in steps)


def test_what_the_build_copies_exists_and_passes_the_dockerignore():
    build = image_steps("build")
    for keyword, rest in build:
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _destination = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert dockerignore_sends(source), f"{source} is excluded by .dockerignore"
    assert any(rest.startswith("virtual_server ") for keyword, rest in build if keyword == "COPY")
    assert not dockerignore_sends(".venv") and not dockerignore_sends(".energymon")
    assert not dockerignore_sends("config/.env.dev")
