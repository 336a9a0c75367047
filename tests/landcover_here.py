"""`landcover ARGS` run in the test's own process, as the console script runs it."""

from __future__ import annotations

import sys

from cli import main as cli


def run_landcover(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `landcover ARGS`."""
    old = sys.argv
    sys.argv = ["landcover", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
