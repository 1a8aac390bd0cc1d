"""Report writers for a finished run.

``summary`` computes pytest's counts, summary line, colour and exit code. ``junit``,
``json_report`` and ``terminal`` write the JUnit XML file, the JSON file and the final
console report. ``html`` and ``markdown`` write the single-file HTML report and the CI
summary; ``statistics``, ``history`` and ``comparison`` compute what they show, from runs
read out of a coordinator's database by ``run_store``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_report_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, creating its folder and replacing any old file in one step.

    The bytes go to a temporary file in the same folder, which is then renamed over
    ``path``, so a reader never sees half a report.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened by name rather than with tempfile.mkstemp, whose files are private (0600),
    # so that the report gets the permissions the umask gives any new file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
