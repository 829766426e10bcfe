"""Every shipped config parses against the current signatures (no training, no data loading)."""

from pathlib import Path

import pytest
import yaml

from mtl.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Ablation grids (a top-level `axes:`) are not `mtl fit` configs; tests/ablation/test_shipped_grids.py plans them.
CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if "axes" not in (yaml.safe_load(p.read_text()) or {})
)
# Overlays apply on top of a base config; the rest stand alone.
OVERLAYS = {
    "text_mlm_verbalizer.yaml": "examples/text_minilm.yaml",
    "quickstart_pcgrad.yaml": "quickstart.yaml",
    "quickstart_mmoe.yaml": "quickstart.yaml",
    "quickstart_famo.yaml": "quickstart.yaml",
    "text_cpu.yaml": "examples/text_minilm.yaml",
    "census4.yaml": "quickstart.yaml",
}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses(config: Path, capsys):
    first = config.read_text().splitlines()[0]
    assert first.startswith("#"), "every config opens with a comment that says what it runs"
    args = ["fit"]
    if config.name in OVERLAYS:
        args += ["--config", str(ROOT / "configs" / OVERLAYS[config.name])]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["heads"], "a config names at least one head"
