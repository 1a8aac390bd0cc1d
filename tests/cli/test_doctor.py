"""Tests of ``swarmctl doctor``: exit codes and output, with real sockets and interpreters."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmctl.doctor import CheckResult, check_disk, check_glibc, check_port
from tests.conftest import run_swarmctl


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.secret"
    path.write_text("a" * 64 + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port that a TCP socket listens on at 127.0.0.1 for the length of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doctor(swarm_env: dict, tmp_path: Path, *args: str):
    return run_swarmctl(["doctor", "--data-dir", str(tmp_path / "data"), *args], swarm_env, timeout=60)


def lines_with(output: str, status: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{status} ") and f" {name}: " in line]


def write_script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_doctor_all_ok_exits_zero(swarm_env, tmp_path, secret_file) -> None:
    port = free_port()
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(port), "--secret-file", str(secret_file))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    output = completed.stdout
    for name in ("python", "pytest", "glibc", "disk", "port", "secret"):
        assert lines_with(output, "ok", name), f"no ok line for {name}:\n{output}"
    assert f"127.0.0.1:{port} is free for TCP and UDP" in output
    assert "problem " not in output
    assert output.splitlines()[-1] == "no problems found"


def test_doctor_port_in_use_is_problem(swarm_env, tmp_path, listening_port) -> None:
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(listening_port))

    assert completed.returncode == 1, completed.stdout + completed.stderr
    problems = lines_with(completed.stdout, "problem", "port")
    assert len(problems) == 1
    assert f"127.0.0.1:{listening_port} cannot be bound for TCP" in problems[0]
    assert "in use" in problems[0]
    lines = completed.stdout.splitlines()
    fix = lines[lines.index(problems[0]) + 1]
    assert fix.startswith("fix ")
    assert "--listen" in fix
    assert lines[-1] == "1 problem found"


def test_doctor_udp_port_in_use_is_problem(swarm_env, tmp_path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(port))

    assert completed.returncode == 1, completed.stdout + completed.stderr
    problems = lines_with(completed.stdout, "problem", "port")
    assert len(problems) == 1
    assert "cannot be bound for UDP" in problems[0]


def test_doctor_checks_every_port(swarm_env, tmp_path, listening_port) -> None:
    free = free_port()
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(free), "--port", str(listening_port))

    assert completed.returncode == 1
    assert len(lines_with(completed.stdout, "ok", "port")) == 1
    assert len(lines_with(completed.stdout, "problem", "port")) == 1


def test_doctor_default_port_is_up_default(swarm_env, tmp_path) -> None:
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable)

    port_lines = [line for line in completed.stdout.splitlines() if " port: " in line]
    assert len(port_lines) == 1
    assert "127.0.0.1:7400 " in port_lines[0]


def test_doctor_python_not_found(swarm_env, tmp_path) -> None:
    missing = tmp_path / "no-such-python"
    completed = doctor(swarm_env, tmp_path, "--python", str(missing), "--port", str(free_port()))

    assert completed.returncode == 1
    problems = lines_with(completed.stdout, "problem", "python")
    assert len(problems) == 1
    assert str(missing) in problems[0]
    assert "does not exist" in problems[0]


def test_doctor_python_name_not_on_path(swarm_env, tmp_path) -> None:
    completed = doctor(swarm_env, tmp_path, "--python", "python-that-is-not-installed", "--port", str(free_port()))

    assert completed.returncode == 1
    assert "was not found on PATH" in lines_with(completed.stdout, "problem", "python")[0]


def test_doctor_python_without_pytest(swarm_env, tmp_path) -> None:
    # -S leaves out site-packages, where pytest is installed.
    python = write_script(tmp_path / "python-no-site", f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    completed = doctor(swarm_env, tmp_path, "--python", python, "--port", str(free_port()))

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert lines_with(completed.stdout, "ok", "python")
    problems = lines_with(completed.stdout, "problem", "pytest")
    assert len(problems) == 1
    assert "ModuleNotFoundError" in problems[0]
    assert "-m pip install pytest" in completed.stdout


def test_doctor_python_too_old(swarm_env, tmp_path) -> None:
    fake = write_script(
        tmp_path / "python3.7",
        '#!/bin/sh\necho \'{"version": [3, 7, 9], "executable": "/opt/python3.7", "pytest": "7.4.4"}\'\n',
    )
    completed = doctor(swarm_env, tmp_path, "--python", fake, "--port", str(free_port()))

    assert completed.returncode == 1
    problems = lines_with(completed.stdout, "problem", "python")
    assert len(problems) == 1
    assert "Python 3.7.9, older than 3.8" in problems[0]


def test_doctor_python_that_prints_nothing(swarm_env, tmp_path) -> None:
    broken = write_script(tmp_path / "broken-python", "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    completed = doctor(swarm_env, tmp_path, "--python", broken, "--port", str(free_port()))

    assert completed.returncode == 1
    problems = lines_with(completed.stdout, "problem", "python")
    assert "exited with code 3" in problems[0]
    assert "cannot start" in problems[0]


def test_doctor_secret_readable_by_others(swarm_env, tmp_path, secret_file) -> None:
    secret_file.chmod(0o644)
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(free_port()), "--secret-file", str(secret_file))

    assert completed.returncode == 1
    problems = lines_with(completed.stdout, "problem", "secret")
    assert len(problems) == 1
    assert "mode 0644" in problems[0]
    assert f"fix      chmod 600 {secret_file}" in completed.stdout
    assert "a" * 64 not in completed.stdout


def test_doctor_secret_missing(swarm_env, tmp_path) -> None:
    missing = tmp_path / "missing.secret"
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(free_port()), "--secret-file", str(missing))

    assert completed.returncode == 1
    assert f"{missing} not found" in lines_with(completed.stdout, "problem", "secret")[0]


def test_doctor_secret_too_short(swarm_env, tmp_path, secret_file) -> None:
    secret_file.write_text("short\n")
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(free_port()), "--secret-file", str(secret_file))

    assert completed.returncode == 1
    assert "5 characters long, shorter than 32" in lines_with(completed.stdout, "problem", "secret")[0]


def test_doctor_secret_from_environment(swarm_env, tmp_path, secret_file) -> None:
    secret_file.chmod(0o640)
    swarm_env["SWARMCTL_SECRET_FILE"] = str(secret_file)
    completed = doctor(swarm_env, tmp_path, "--python", sys.executable, "--port", str(free_port()))

    assert completed.returncode == 1
    assert "mode 0640" in lines_with(completed.stdout, "problem", "secret")[0]


def test_doctor_json_is_one_object(swarm_env, tmp_path, listening_port, secret_file) -> None:
    completed = doctor(
        swarm_env, tmp_path, "--json", "--python", sys.executable, "--port", str(listening_port),
        "--secret-file", str(secret_file),
    )

    assert completed.returncode == 1
    report = json.loads(completed.stdout)
    assert report["ok"] is False
    assert report["problems"] == 1
    by_name = {check["name"]: check for check in report["checks"]}
    assert set(by_name) == {"python", "pytest", "glibc", "disk", "port", "docker", "secret"}
    assert by_name["port"]["ok"] is False
    assert by_name["port"]["fix"]
    assert by_name["secret"]["ok"] is True
    assert by_name["docker"]["informational"] is True


def test_doctor_json_all_ok(swarm_env, tmp_path) -> None:
    completed = doctor(swarm_env, tmp_path, "--json", "--python", sys.executable, "--port", str(free_port()))

    assert completed.returncode == 0, completed.stdout
    report = json.loads(completed.stdout)
    assert report == {"ok": True, "problems": 0, "checks": report["checks"]}


@pytest.mark.parametrize("port", ["not-a-port", "70000", "0"])
def test_doctor_invalid_port_is_usage_error(swarm_env, tmp_path, port) -> None:
    completed = doctor(swarm_env, tmp_path, "--port", port)

    assert completed.returncode == 4
    assert "Invalid value for '--port'" in completed.stderr


def test_doctor_skip_leaves_checks_out(swarm_env, tmp_path) -> None:
    completed = doctor(swarm_env, tmp_path, "--json", "--python", "/no/such/python", "--skip", "python", "--skip", "port")

    assert completed.returncode == 0, completed.stdout
    names = {check["name"] for check in json.loads(completed.stdout)["checks"]}
    assert names == {"glibc", "disk", "docker"}


def test_doctor_skip_unknown_check_is_usage_error(swarm_env, tmp_path) -> None:
    completed = doctor(swarm_env, tmp_path, "--skip", "pytest")

    assert completed.returncode == 4
    assert "--skip 'pytest' is invalid: use one of python, glibc, disk, port, docker, secret" in completed.stderr


def test_check_disk_below_minimum(tmp_path) -> None:
    result = check_disk(tmp_path / "new" / "folder", min_free_bytes=2**62)

    assert result.problem
    assert "not created yet" in result.detail
    assert result.fix and "--data-dir" in result.fix


def test_check_disk_ok(tmp_path) -> None:
    result = check_disk(tmp_path, min_free_bytes=1)

    assert result.ok
    assert str(tmp_path) in result.detail


def test_check_glibc_on_this_machine() -> None:
    result = check_glibc()

    assert result.ok, result.detail
    assert result.detail.startswith("glibc 2.")


def test_check_port_unknown_host() -> None:
    result = check_port("no-such-host.invalid", 7400)

    assert result.problem
    assert "--host" in (result.fix or "")


def test_check_port_address_not_local() -> None:
    # 192.0.2.0/24 is reserved for documentation, so no interface of this machine has it;
    # binding fails locally and nothing is sent.
    result = check_port("192.0.2.1", 7400)

    assert result.problem
    assert "cannot be bound for TCP" in result.detail
    assert "ip address" in (result.fix or "")


def test_informational_result_is_no_problem() -> None:
    result = CheckResult("docker", False, "docker client not found", informational=True)

    assert not result.ok
    assert not result.problem
