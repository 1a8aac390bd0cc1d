"""Checks of the machine a swarmctl node or run is about to use, for ``swarmctl doctor``.

Each check returns a ``CheckResult`` and prints nothing, so the CLI decides how to show it
and tests can look at the data. A check never raises for what it finds: a missing
interpreter or a port in use is a result with ``ok=False`` and a fix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmctl.security import MIN_SECRET_CHARS

# pytest 8, which the worker is run with in CI, supports Python 3.8 and newer.
# NOTE: the worker's own code parses as Python 3.6, but runs are tested only on 3.11 and newer.
MIN_SUITE_PYTHON = (3, 8)
# Wheels of the runtime dependencies (cryptography, psutil, msgpack) are built for
# manylinux2014, which needs glibc 2.17. The frozen binary needs the glibc it was built on,
# which its build writes into BUILD_INFO_FILE.
MIN_GLIBC_SOURCE = (2, 17)
BUILD_INFO_FILE = "swarmctl-build.json"
# NOTE: an estimate. Bundles are cached per suite digest and never pruned, and state.db grows
# with every run, so a busy coordinator or executor needs more than this.
MIN_FREE_BYTES = 1024**3
COMMAND_TIMEOUT_S = 20.0

# Printed by the suite's interpreter: its version, and pytest's version or the import error.
_PYTHON_PROBE = """
import json, sys
info = {"version": list(sys.version_info[:3]), "executable": sys.executable}
try:
    import pytest
    info["pytest"] = pytest.__version__
except Exception as exc:
    info["pytest_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(info))
"""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``detail`` states what was found, ``fix`` what to do about it.

    A check marked ``informational`` reports something swarmctl can work without, such as
    Docker, so it never counts as a problem.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    informational: bool = False

    @property
    def problem(self) -> bool:
        return not self.ok and not self.informational

    def to_json(self) -> dict:
        return asdict(self)


def check_python(python: str) -> list[CheckResult]:
    """Check the suite's interpreter: that it starts, its version, and that it imports pytest."""
    executable = _find_executable(python)
    if executable is None:
        where = "does not exist or is not executable" if "/" in python else "was not found on PATH"
        return [
            CheckResult(
                "python", False, f"{python!r} {where}",
                f"install Python {_version(MIN_SUITE_PYTHON)} or newer, or pass --python with the path of the suite's interpreter",
            )
        ]
    try:
        completed = subprocess.run(
            [executable, "-c", _PYTHON_PROBE], check=False, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return [CheckResult("python", False, f"{executable} timed out: no output within {COMMAND_TIMEOUT_S:.0f}s", f"check that it runs: {executable} -c pass")]
    except OSError as exc:
        return [CheckResult("python", False, f"{executable} cannot be started: {exc.strerror or exc}", "pass --python with a working interpreter")]
    try:
        info = json.loads(completed.stdout.strip().splitlines()[-1])
        version = tuple(int(part) for part in info["version"])
    except (IndexError, ValueError, TypeError, KeyError):
        output = (completed.stderr or completed.stdout).strip()[-500:]
        return [
            CheckResult(
                "python", False, f"{executable} exited with code {completed.returncode} and printed no version: {output}",
                "pass --python with a Python interpreter",
            )
        ]

    name = executable
    if info.get("executable") and info["executable"] != executable:
        name = f"{executable} ({info['executable']})"  # a shim or a venv link, then the real interpreter
    results = []
    if version < MIN_SUITE_PYTHON:
        results.append(
            CheckResult(
                "python", False, f"{name} is Python {_version(version)}, older than {_version(MIN_SUITE_PYTHON)}",
                f"pass --python with Python {_version(MIN_SUITE_PYTHON)} or newer",
            )
        )
    else:
        results.append(CheckResult("python", True, f"{name} is Python {_version(version)}"))

    if "pytest" in info:
        results.append(CheckResult("pytest", True, f"pytest {info['pytest']} imports under {name}"))
    else:
        results.append(
            CheckResult(
                "pytest", False, f"pytest does not import under {name}: {info.get('pytest_error', 'unknown error')}",
                f"install it with: {executable} -m pip install pytest (or pass --python with an interpreter that has it)",
            )
        )
    return results


def check_glibc() -> CheckResult:
    """Check that the C library is glibc, at least the version swarmctl's compiled parts need."""
    needed, needed_by = min_glibc()
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        found = None
    if not found or not found.startswith("glibc "):
        return CheckResult(
            "glibc", False, "the C library is not glibc (os.confstr reports no glibc version)",
            f"use a glibc-based system (Debian, Ubuntu, RHEL); {needed_by} needs glibc {_version(needed)} or newer",
        )
    version = _parse_version(found.removeprefix("glibc "))
    if version < needed:
        return CheckResult(
            "glibc", False, f"glibc {_version(version)} is older than {_version(needed)}, which {needed_by} needs",
            "upgrade the system, or install swarmctl from source with pip on this machine",
        )
    return CheckResult("glibc", True, f"glibc {_version(version)} (at least {_version(needed)} for {needed_by})")


def min_glibc() -> tuple[tuple[int, ...], str]:
    """Return the minimum glibc version and what needs it: this binary's build, or the wheels."""
    bundle_dir = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle_dir:
        try:
            info = json.loads((Path(bundle_dir) / BUILD_INFO_FILE).read_text())
            return _parse_version(info["glibc"]), "this swarmctl binary"
        except (OSError, ValueError, KeyError):
            pass
    return MIN_GLIBC_SOURCE, "swarmctl's dependencies"


def check_disk(folder: Path, min_free_bytes: int = MIN_FREE_BYTES) -> CheckResult:
    """Check that the data folder (or the nearest folder above it that exists) is writable and has room."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = str(folder) if existing == folder else f"{folder} (not created yet; {existing} exists)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return CheckResult(
            "disk", False, f"data folder {where} is not writable by this user",
            f"give this user write access to {existing}, or choose another folder with --data-dir or SWARMCTL_HOME",
        )
    try:
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        return CheckResult("disk", False, f"data folder {where}: free space cannot be read: {exc.strerror or exc}", "choose another folder with --data-dir or SWARMCTL_HOME")
    if free < min_free_bytes:
        return CheckResult(
            "disk", False, f"data folder {where} has {_size(free)} free, less than {_size(min_free_bytes)}",
            "free space there (old bundles are in its bundles/ folder), or choose another folder with --data-dir or SWARMCTL_HOME",
        )
    return CheckResult("disk", True, f"data folder {where} has {_size(free)} free")


def check_port(host: str, port: int) -> CheckResult:
    """Check that ``host:port`` can be bound for TCP (clients, executors) and UDP (gossip)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return CheckResult("port", False, f"{address}: the host cannot be resolved: {exc.strerror}", "pass --host with an IP address of this machine")
    family, _, _, _, sockaddr = infos[0]
    for kind, protocol_name in ((socket.SOCK_STREAM, "TCP"), (socket.SOCK_DGRAM, "UDP")):
        try:
            with socket.socket(family, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    # As the coordinator's listener does, so that connections in TIME_WAIT do not count.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except OSError as exc:
            return CheckResult("port", False, f"{address} cannot be bound for {protocol_name}: {exc.strerror or exc}", _port_fix(exc, port))
    return CheckResult("port", True, f"{address} is free for TCP and UDP")


def _port_fix(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"stop the process listening there (see: ss -tulpn 'sport = :{port}'), or choose another port with swarmctl up --listen"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "pass --host with an address of this machine's interfaces (see: ip address)"
    if exc.errno == errno.EACCES:
        return "use a port above 1023, or grant the capability CAP_NET_BIND_SERVICE"
    return "choose another address or port"


def check_docker() -> CheckResult:
    """Report whether a Docker client and daemon are available; only the Docker images need them."""
    docker = shutil.which("docker")
    if docker is None:
        return CheckResult(
            "docker", False, "docker client not found; only the images in packaging/docker need it", informational=True,
        )
    # `docker version` exits 1 when the daemon does not respond, so the client's version comes from --version.
    client = _run_text([docker, "--version"])
    server = _run_text([docker, "info", "--format", "{{.ServerVersion}}"])
    if server is None:
        return CheckResult(
            "docker", False, f"{client or 'docker client'} at {docker}; the daemon did not respond",
            "start the Docker daemon (systemctl start docker) to build or run the images", informational=True,
        )
    return CheckResult("docker", True, f"{client or 'docker client'} at {docker}; daemon {server}", informational=True)


def check_secret_file(path: Path) -> CheckResult:
    """Check that the cluster secret file exists, is long enough and only its owner can access it."""
    try:
        mode = path.stat().st_mode
        length = len(path.read_bytes().strip())
    except FileNotFoundError:
        return CheckResult(
            "secret", False, f"cluster secret file {path} not found",
            f"create it with: python3 -c 'import secrets; print(secrets.token_hex(32))' > {path}; chmod 600 {path}",
        )
    except OSError as exc:
        return CheckResult("secret", False, f"cluster secret file {path} cannot be read: {exc.strerror or exc}", f"make {path} readable by the user that runs swarmctl")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return CheckResult(
            "secret", False, f"cluster secret file {path} has mode {stat.S_IMODE(mode):04o}: group or others can access it",
            f"chmod 600 {path}",
        )
    if length < MIN_SECRET_CHARS:
        return CheckResult(
            "secret", False, f"cluster secret in {path} is {length} characters long, shorter than {MIN_SECRET_CHARS}",
            f"write a new one: python3 -c 'import secrets; print(secrets.token_hex(32))' > {path}",
        )
    return CheckResult("secret", True, f"cluster secret file {path} has mode {stat.S_IMODE(mode):04o} and {length} characters")


# Names that ``run_checks`` can skip; "python" covers the pytest check too.
CHECK_NAMES = ("python", "glibc", "disk", "port", "docker", "secret")


def run_checks(
    *, python: str, data_dir: Path, host: str, ports: list[int], secret_file: Path | None,
    skip: frozenset[str] = frozenset(),
) -> list[CheckResult]:
    """Run every check not in ``skip``, in the order ``swarmctl doctor`` prints them."""
    results = []
    if "python" not in skip:
        results.extend(check_python(python))
    if "glibc" not in skip:
        results.append(check_glibc())
    if "disk" not in skip:
        results.append(check_disk(data_dir))
    if "port" not in skip:
        results.extend(check_port(host, port) for port in ports)
    if "docker" not in skip:
        results.append(check_docker())
    if secret_file is not None and "secret" not in skip:
        results.append(check_secret_file(secret_file))
    return results


def _find_executable(python: str) -> str | None:
    if "/" in python:
        path = Path(python).absolute()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(python)


def _run_text(argv: list[str]) -> str | None:
    """Return the stripped stdout of ``argv``, or None if it fails or times out."""
    try:
        completed = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _version(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _size(count: int) -> str:
    if count < 1024**2:
        return f"{count / 1024:.1f} KiB"
    if count < 1024**3:
        return f"{count / 1024**2:.1f} MiB"
    return f"{count / 1024**3:.1f} GiB"
