"""Entry point of the frozen swarmctl binary (PyInstaller single file)."""

import os
import sys


def restore_library_path() -> None:
    """Give child processes the LD_LIBRARY_PATH this program was started with.

    The bootloader puts the folder of the bundled libraries (libpython, libssl, libsqlite3)
    first on LD_LIBRARY_PATH and keeps the old value in LD_LIBRARY_PATH_ORIG. This process
    has loaded its libraries by now, so the old value goes back: the suite's python3, a
    command case and the shell a test starts then load the system's libraries. A swarmctl
    started by this one reuses the same unpacked folder, and there the bootloader changes
    neither variable, so a path that does not start with the bundle's folder stays as it is.
    """
    bundle = getattr(sys, "_MEIPASS", None)
    current = os.environ.get("LD_LIBRARY_PATH")
    if not bundle or current is None or current.split(os.pathsep)[0] != bundle:
        return
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        del os.environ["LD_LIBRARY_PATH"]
    else:
        os.environ["LD_LIBRARY_PATH"] = original


if getattr(sys, "frozen", False):
    restore_library_path()

from swarmctl.cli import main

main()
