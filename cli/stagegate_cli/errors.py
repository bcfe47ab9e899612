"""The one way a command fails on purpose: `error: <one line>` on stderr and an exit code from
stagegate_core.exitcodes, never a traceback.

The expected errors are the core's (a bad manifest, an impossible plan), the cluster client's,
a command's refusal, and the trainer's (bad data, a look-ahead feature, unreachable storage, a
run folder of another spec). The trainer's are registered by name and looked up only once an
exception is on its way out: importing them here would import the numeric stack.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, overload

import click
from stagegate_core import exitcodes
from stagegate_core.plan import PlanError
from stagegate_core.spec import SpecError

from .client import ClusterError

F = TypeVar("F", bound=Callable[..., Any])

# Import names of the trainer extra's packages: a command that reaches for one of them without
# it installed needs `stagegate[trainer]`, which is what it should say.
TRAINER_PACKAGES = frozenset(
    {"numpy", "pandas", "pyarrow", "lightgbm", "ccxt", "boto3", "botocore", "matplotlib"}
)

# "module:Class" of the expected errors of other packages (see expect()).
_registered: list[str] = []


class Refused(Exception):
    """A command declines what it was asked (a decision on an ended run, a second decision, a
    namespace contradiction, a stage or report not there yet); str() is the one line to show."""


def expect(*paths: str) -> None:
    """Treat these exceptions ("package.module:Class") as expected, without importing them."""
    _registered.extend(p for p in paths if p not in _registered)


def _expected() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [SpecError, PlanError, ClusterError, Refused]
    for path in _registered:
        module, name = path.split(":")
        # A class whose module was never imported cannot have been raised.
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def fail(message: str, code: int = exitcodes.USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    if (exc.name or "").split(".")[0] not in TRAINER_PACKAGES:
        return None
    context = click.get_current_context(silent=True)
    command = context.command_path if context else "this command"
    extra = "stagegate[trainer]"
    return f"{command} needs {extra} ({exc.name} is not installed): pip install '{extra}'"


@overload
def friendly(fn: F) -> F: ...
@overload
def friendly(*, ctrl_c: bool) -> Callable[[F], F]: ...
def friendly(fn: F | None = None, *, ctrl_c: bool = False) -> Any:
    """Expected errors, and a package of `stagegate[trainer]` that is not installed, become
    `error: <one line>` and exit 2.

    ctrl_c=True (the cluster commands, which only wait on the API server) also ends a Ctrl-C
    quietly with 130; the local commands leave it to click (`Aborted!`) and the runner.
    """

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except ModuleNotFoundError as exc:
                message = _missing_extra(exc)
                if message is None:
                    raise
                fail(message)
            except _expected() as exc:
                fail(str(exc))
            except KeyboardInterrupt:
                if not ctrl_c:
                    raise
                sys.exit(exitcodes.CANCELLED)

        return wrapper  # type: ignore[return-value]

    return decorate if fn is None else decorate(fn)
