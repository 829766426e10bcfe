"""Shared fixtures: the tiny toy config of tests/test_cli.py as a file, and one config parser for it."""

from pathlib import Path

import pytest
import yaml

from mtl.ablation.config_parser import ConfigParser
from tests.test_cli import TINY


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TINY with one epoch (a run takes ~1 s once Lightning is imported)."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["trainer"]["max_epochs"] = 1
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_parser(tiny_config: Path) -> ConfigParser:
    return ConfigParser([str(tiny_config)])
