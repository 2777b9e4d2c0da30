"""config/preflight/check-passwords.sh, the compose stack's `preflight` service, run with a
POSIX sh on the environment compose gives that service: config/.env.dev's dev-only- passwords
are refused (exit 1, one line naming every variable that holds one) unless ENERGYMON_DEV_STACK
is true; real passwords pass. And the compose file makes it a gate: every other service waits
for it to exit 0, and it sees every password of the stack."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest
from deployment_files import (
    ROOT,
    compose_text,
    load_compose,
    read_env_file,
    referenced_variables,
    resolved_compose,
    service_environment,
)

SCRIPT = ROOT / "config" / "preflight" / "check-passwords.sh"
MOUNTED_AT = "/etc/energymon/check-passwords.sh"
# The shells the check must run under: the image's /bin/sh (dash on Debian) and any other
# POSIX sh found here.
SHELLS = [shell for shell in ("sh", "dash", "posh") if shutil.which(shell)]
DEV_PASSWORDS = sorted(
    key for key, value in read_env_file().items() if value.startswith("dev-only-")
)


def password_variables() -> set[str]:
    return {name for name in referenced_variables(compose_text()) if name.endswith("PASSWORD")}


def preflight_environment(env: dict[str, str]) -> dict[str, str]:
    """The preflight service's environment as compose gives it with this env file."""
    return service_environment(resolved_compose(env)["services"]["preflight"])


def check(environment: dict[str, str], shell: str = "sh") -> subprocess.CompletedProcess:
    return subprocess.run(
        [shell, str(SCRIPT)],
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_env_file_holds_dev_only_passwords():
    assert set(DEV_PASSWORDS) == password_variables()  # every password of the stack


@pytest.mark.parametrize("shell", SHELLS)
def test_dev_only_passwords_are_refused_in_one_line(shell):
    result = check(preflight_environment(read_env_file()), shell)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("energymon preflight: refusing to start: ")
    named = line.split("refusing to start: ", 1)[1].split(" hold ", 1)[0].split(", ")
    assert named == DEV_PASSWORDS
    assert "ENERGYMON_DEV_STACK=true" in line


@pytest.mark.parametrize("shell", SHELLS)
def test_the_dev_stack_switch_accepts_them(shell):
    result = check(preflight_environment({**read_env_file(), "ENERGYMON_DEV_STACK": "true"}), shell)
    assert result.returncode == 0, result.stderr
    assert "development stack" in result.stdout and result.stderr == ""


def real_passwords() -> dict[str, str]:
    env = read_env_file()
    return {**env, **{key: secrets.token_urlsafe(18) for key in DEV_PASSWORDS}}


@pytest.mark.parametrize("dev_stack", [None, "false", "true"])
def test_real_passwords_are_accepted(dev_stack):
    env = real_passwords()
    if dev_stack is not None:
        env["ENERGYMON_DEV_STACK"] = dev_stack
    result = check(preflight_environment(env))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "energymon preflight: no development password in use\n"


def test_one_dev_password_left_is_named_alone():
    env = {**real_passwords(), "DAGSTER_POSTGRES_PASSWORD": "dev-only-dagster-storage-password"}
    result = check(preflight_environment(env))
    assert result.returncode == 1
    assert "refusing to start: DAGSTER_POSTGRES_PASSWORD hold " in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["yes", "TRUE", "1"])
def test_an_unclear_switch_is_refused(value):
    result = check(preflight_environment({**read_env_file(), "ENERGYMON_DEV_STACK": value}))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"ENERGYMON_DEV_STACK='{value}' is neither true nor false" in line


def test_a_value_is_never_run_as_code(tmp_path):
    marker = tmp_path / "ran"
    result = check({"INJECTED_PASSWORD": f"$(touch {marker})`touch {marker}`"})
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_the_script_is_posix_sh():
    assert SHELLS
    for shell in SHELLS:
        subprocess.run([shell, "-n", str(SCRIPT)], check=True, timeout=10)


def test_compose_runs_it_before_every_other_service():
    services = load_compose()["services"]
    preflight = services["preflight"]
    assert preflight["entrypoint"] == ["sh", MOUNTED_AT]
    assert f"./{SCRIPT.relative_to(ROOT)}:{MOUNTED_AT}:ro" in preflight["volumes"]
    # No extra image to pull, no network, nothing to write, not root.
    assert preflight["image"] == services["postgres"]["image"]
    assert preflight["network_mode"] == "none" and preflight["read_only"] is True
    assert preflight["user"].split(":")[0] not in ("0", "root")
    # It sees every password of the stack, and the switch.
    environment = service_environment(preflight)
    assert password_variables() | {"ENERGYMON_DEV_STACK"} <= set(environment)
    assert environment["ENERGYMON_DEV_STACK"] == "${ENERGYMON_DEV_STACK:-false}"
    for name, service in services.items():
        if name != "preflight":
            assert service["depends_on"]["preflight"] == {
                "condition": "service_completed_successfully"
            }, name
