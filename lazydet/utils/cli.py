"""The ``main()`` that lazydet's commands share (``lazydet.evaluate``, ``lazydet.predict``).

One contract for every command: ``--help`` prints the module's doc; known errors print one line
``prog: message`` on stderr, no traceback, and exit 2 when the command line or config is wrong
(``UsageError``, ``ConfigError``) or 1 when an input is (a file, a checkpoint, a value:
``InstantiationError``, ``OSError``, ``ValueError``). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["UsageError", "command_main"]


class UsageError(ValueError):
    """A command line that cannot run as written (a missing or malformed argument): exit 2."""


def command_main(
    prog: str, doc: str | None, run: Callable[[list[str]], Any], argv: list[str] | None = None
) -> None:
    """Run ``run(argv)`` as the command ``prog`` and exit with its code (an int; else 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(doc)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Imported here: `--help` stays instant (lazydet.config pulls in omegaconf and Hydra).
    from lazydet.config import ConfigError, InstantiationError

    try:
        code = run(argv)
    except (UsageError, ConfigError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (InstantiationError, OSError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)
