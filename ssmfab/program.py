"""The ``ssmfab`` console script: an invoke Program over the same task collection as ``inv``."""

from __future__ import annotations

import gc
import os
import sys
import types
from typing import Any


class _MockOnFirstUse:
    """Stands in for ``unittest.mock.Mock`` in invoke.context until something builds one: then it imports the
    real module and returns a real Mock."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from unittest import mock

        return mock.Mock(*args, **kwargs)


def import_invoke_without_mock() -> None:
    """Import invoke without loading unittest.mock, which imports asyncio: ~20-25 ms of every command's start.

    invoke.context imports ``Mock`` at load time for MockContext, a testing helper the command line never
    builds. While invoke loads, ``unittest.mock`` is a stand-in whose ``Mock`` imports the real one on first
    use; the stand-in leaves sys.modules right after, so any later ``import unittest.mock`` gets the real module.
    """
    if "invoke.context" in sys.modules or "unittest.mock" in sys.modules:
        return
    stand_in = types.ModuleType("unittest.mock")
    stand_in.Mock = _MockOnFirstUse  # type: ignore[attr-defined]
    sys.modules["unittest.mock"] = stand_in
    try:
        import invoke.context  # noqa: F401
    finally:
        if sys.modules.get("unittest.mock") is stand_in:
            del sys.modules["unittest.mock"]


def main() -> None:
    # Starting up creates tens of thousands of objects that live until exit (invoke, paramiko, botocore and
    # its models) and no garbage: collecting during it cost ~13% of startup's CPU. The collector comes back
    # once the hosts are known (cli.startup_over), or never for a command that ends before that.
    gc.disable()
    import_invoke_without_mock()
    from invoke.program import Program

    from .tasks import ns
    from .version import __version__

    try:
        Program(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab").run()
    except BrokenPipeError:
        # `ssmfab hosts | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
