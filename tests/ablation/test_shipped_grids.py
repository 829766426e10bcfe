"""Every grid in configs/ablations plans (parses against the current signatures) with the command its
header gives, and the CPU overlay of the text example parses on top of its base."""

import shlex
from pathlib import Path

import pytest
import yaml

from mtl.ablation.config_parser import ConfigParser
from mtl.ablation.grid import load_grid
from mtl.ablation.plan import plan_sweep

ROOT = Path(__file__).resolve().parents[2]
GRIDS = sorted(
    p
    for p in (ROOT / "configs" / "ablations").glob("*.yaml")
    if "axes" in (yaml.safe_load(p.read_text()) or {})
)


def run_command(grid: Path) -> list[str]:
    line = next(line for line in grid.read_text().splitlines() if line.startswith("# Run:"))
    words = shlex.split(line.removeprefix("# Run:"))
    return words[words.index("ablate") + 1 :]


def test_the_shipped_grids_exist() -> None:
    assert {p.name for p in GRIDS} >= {"text_heads_pooling.yaml", "census_necks.yaml"}


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.name)
def test_shipped_grid_plans_with_its_documented_command(grid: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    words = run_command(grid)
    configs = [words[i + 1] for i, w in enumerate(words) if w == "--config"]
    assert words[words.index("--grid") + 1] == str(grid.relative_to(ROOT))
    parser = ConfigParser(configs)
    sweep = plan_sweep(configs, load_grid(grid), [0], tmp_path, parser=parser)
    assert len(sweep.manifest.configurations) >= 2
    # Each baseline overlay leaves exactly its task: the overlay's `model.heads` replaces the base's mapping.
    assert set(sweep.manifest.baselines) == set(sweep.manifest.tasks)
    for path, overlay in sweep.overlays.items():
        task = Path(path).parent.name.rsplit("-", 1)[0]
        resolved = parser.resolve([*configs, yaml.safe_dump(overlay)])
        assert list(resolved["model"]["heads"]) == [task]
        assert resolved["data"]["source"]["init_args"]["tasks"] == [task]
