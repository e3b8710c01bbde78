"""Runs a command with its stderr on a pseudo-terminal and its stdout into a file.

usage: run.py STDOUT_FILE COMMAND [ARG...]

What the command wrote to the terminal is copied to this script's stdout; the exit code is the
command's. The black-box tests use it to see a program as a person at a terminal would while a
pipeline redirects stdout.
"""

import os
import pty
import subprocess
import sys


def main() -> int:
    stdout_path, command = sys.argv[1], sys.argv[2:]
    controller, terminal = pty.openpty()
    with open(stdout_path, "wb") as stdout:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=terminal
        )
    os.close(terminal)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the command closed the terminal (it exited)
            break
        if not chunk:
            break
        seen += chunk
    code = child.wait()
    sys.stdout.buffer.write(seen)
    return code


if __name__ == "__main__":
    sys.exit(main())
