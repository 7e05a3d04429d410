"""The ``ssmfab`` console script: an invoke Program over the same task collection as ``inv``."""

from __future__ import annotations

import gc
import importlib
import os
import sys
import types

TYPE_CHECKING = False  # typing itself is not loaded: a warm command's start loads nothing it does not use
if TYPE_CHECKING:
    from typing import Any


class _MockOnFirstUse:
    """Stands in for ``unittest.mock.Mock`` in invoke.context until something builds one: then it imports the
    real module and returns a real Mock."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from unittest import mock

        return mock.Mock(*args, **kwargs)


class _ModuleOnFirstUse(types.ModuleType):
    """Stands in for a module a library binds at import but uses later, if ever: the first attribute read
    imports the real module (by then out of sys.modules) and hands its attribute over."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


def _stand_ins() -> dict[str, types.ModuleType]:
    mock = types.ModuleType("unittest.mock")
    mock.Mock = _MockOnFirstUse  # type: ignore[attr-defined]
    return {
        # invoke.context imports Mock at load time for MockContext, a testing helper the command line never
        # builds; unittest.mock imports asyncio: ~20-25 ms.
        "unittest.mock": mock,
        # invoke's YAML parser reads invoke.yaml config files; loading it (its C half and a reader that
        # compiles its regular expressions) cost ~19 ms of every start, with or without such a file.
        "invoke.vendor.yaml": _ModuleOnFirstUse("invoke.vendor.yaml"),
    }


def import_invoke_lean() -> None:
    """Import invoke without the modules it loads for features a command seldom or never uses.

    While invoke loads, each of those is a stand-in that imports the real module on first use; the stand-ins
    leave sys.modules right after, so any later import of those modules gets the real ones.
    """
    if "invoke.context" in sys.modules:
        return
    stand_ins = {name: module for name, module in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        import invoke.context  # noqa: F401
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def main() -> None:
    # Starting up creates tens of thousands of objects that live until exit (invoke, paramiko, botocore and
    # its models) and no garbage: collecting during it cost ~13% of startup's CPU. The collector comes back
    # once the hosts are known (cli.startup_over), or never for a command that ends before that.
    gc.disable()
    from .warm import run_warm

    code = run_warm(sys.argv[1:])  # warm sessions: the keeper runs it, this process only streams
    if code is not None:
        sys.exit(code)
    import_invoke_lean()
    from .commandline import SSMFabProgram
    from .tasks import ns
    from .version import __version__

    try:
        SSMFabProgram(namespace=ns, version=__version__, name="ssmfab", binary="ssmfab").run()
    except BrokenPipeError:
        # `ssmfab hosts | head`: the reader left; exit quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
