"""The parts of Hydra's private API (``hydra._internal``) that lazydet uses, in one place.

Hydra has no public way to register a ``ConfigSource``, to compose a config without running a
task, or to parse its own command line; lazydet needs all three. They are reached only through
the functions here, checked against the Hydra versions they were written for
(``TESTED_VERSIONS``), so that a Hydra upgrade that moves them fails here with one message
instead of deep inside a run.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

__all__ = ["TESTED_VERSIONS", "args_parser", "config_loader", "register_config_source"]

# hydra-core releases whose private names below were checked (pyproject pins hydra-core>=1.3.2).
TESTED_VERSIONS = ("1.3",)


def _check_version() -> None:
    import hydra

    if not any(hydra.__version__.startswith(v + ".") for v in TESTED_VERSIONS):
        raise ConfigError(
            f"hydra-core {hydra.__version__} is installed; lazydet uses Hydra internals checked "
            f"with {', '.join(TESTED_VERSIONS)}.x only. Install hydra-core~=1.3."
        )


def register_config_source(source: type) -> None:
    """Make Hydra read ``scheme://`` search-path entries with ``source`` (a ``ConfigSource``)."""
    _check_version()
    from hydra._internal.sources_registry import SourcesRegistry

    SourcesRegistry.instance().register(source)


def config_loader() -> Any:
    """Hydra's config loader over the ConfigStore's search path (``load_configuration``)."""
    _check_version()
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    return ConfigLoaderImpl(config_search_path=create_config_search_path(None))


def args_parser() -> Any:
    """Hydra's own ``argparse`` parser (``--cfg``, ``-m``, ``--info``, overrides...)."""
    _check_version()
    from hydra._internal.utils import get_args_parser

    return get_args_parser()
