"""The ``mtl fit`` config parser, in-process: resolve a run's configs and flags without running it.

A sweep checks every run's command before it starts any (a typo in a grid key should fail in a second,
not after the first hour of training). Parsing in-process with the very parser ``mtl fit`` builds
(`mtl.cli.MultiTaskCLI`, no classes instantiated, no data loaded) costs ~0.2 s a run after building
the parser once, against several seconds for a ``mtl fit --print_config`` subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ConfigParser", "ConfigRejected"]


class ConfigRejected(ValueError):
    """The config parser rejected a command line; ``reason`` is jsonargparse's explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def _quiet_construction() -> Iterator[None]:
    """Building the CLI only to parse: hide LightningCLI's warning about ``args`` given while sys.argv has
    arguments of its own (ours), and its "Seed set to" line (the config's seed is set in this process,
    which trains nothing)."""
    saved, seed_logger = sys.argv, logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_logger.level
    sys.argv = saved[:1]
    seed_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sys.argv = saved
        seed_logger.setLevel(level)


class ConfigParser:
    """Resolves ``--config`` files and ``--key value`` flags exactly as ``mtl fit`` would.

    Args:
        configs: the base configs; they must parse (the parser is built from them once).
    """

    def __init__(self, configs: Sequence[str]) -> None:
        from mtl.cli import MultiTaskCLI
        from mtl.data.datamodule import MultiTaskDataModule
        from mtl.module import MultiTaskModule

        class _ParseOnly(MultiTaskCLI):
            def instantiate_classes(self) -> None:
                """Parsing is all a check needs: build no model, data or trainer."""

        with _quiet_construction():
            try:
                cli = _ParseOnly(
                    MultiTaskModule,
                    MultiTaskDataModule,
                    save_config_callback=None,
                    auto_configure_optimizers=False,
                    run=False,
                    seed_everything_default=False,
                    parser_kwargs={"exit_on_error": False},
                    args=_config_args(configs),
                )
            except argparse.ArgumentError as err:
                raise ConfigRejected(str(err)) from None
        self._parser = cli.parser
        self._dump_options = inspect.signature(self._parser.dump).parameters

    def resolve(self, configs: Sequence[str], args: Sequence[str] = ()) -> dict[str, Any]:
        """The full config (every default filled in) of ``mtl fit --config ... [args]``.

        Raises:
            ConfigRejected: the parser rejected a file, a key or a value.
        """
        try:
            namespace = self._parser.parse_args([*_config_args(configs), *args])
        except argparse.ArgumentError as err:
            raise ConfigRejected(str(err)) from None
        # Keep `None` fields (a null neck is still a field a grid may set); jsonargparse >= 4.49 calls the
        # option `skip_unset`, older versions `skip_none`.
        keep_none = {"skip_unset" if "skip_unset" in self._dump_options else "skip_none": False}
        return json.loads(self._parser.dump(namespace, format="json", **keep_none))


def _config_args(configs: Sequence[str]) -> list[str]:
    return [item for config in configs for item in ("--config", str(config))]
