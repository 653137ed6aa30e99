"""Every training config a recipe ships parses, its paired feature config exists, and a live config's header
states the algorithmic latency its settings give (window + hop + lookahead x hop)."""
import re
from pathlib import Path

import pytest
import yaml

from sepkit.frontend import FeatureConfig
from sepkit.train.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(ROOT.glob("egs/*/*/conf/tuning/*.yaml"))
PATHS = ["--train_dump", "t", "--valid_dump", "v", "--outdir", "o"]
LATENCY = re.compile(r"ALGORITHMIC LATENCY: window \+ hop \+ lookahead x hop = (\d+) \+ (\d+) \+ (?:(\d+) x )?(\d+) "
                     r"samples = (\d+) samples = (\d+) ms at (\d+) kHz")


def _feat_conf(config):
    link = config.with_suffix(".feat_conf")
    return link.resolve() if link.exists() else config.parents[1] / "feats.yaml"


def test_there_are_configs():
    assert len(CONFIGS) > 10


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "egs")))
def test_config_parses_and_its_features_exist(config):
    args = parse_config(["--config", str(config)] + PATHS)
    assert args.hidden > 0
    feats = _feat_conf(config)
    assert feats.is_file(), f"{config}: feature config {feats} missing"
    FeatureConfig.from_dict(yaml.safe_load(feats.read_text()))


@pytest.mark.parametrize("config", [c for c in CONFIGS if "LATENCY" in c.read_text()],
                         ids=lambda p: str(p.relative_to(ROOT / "egs")))
def test_stated_latency_is_the_settings_latency(config):
    m = LATENCY.search(config.read_text())
    assert m, f"{config}: latency header not in the expected form"
    window, hop, la, hop2, total, ms, khz = (int(g) if g else 0 for g in m.groups())
    feats = yaml.safe_load(_feat_conf(config).read_text())
    lookahead = yaml.safe_load(config.read_text()).get("lookahead", 0)
    n_fft, hop_length, rate = feats["n_fft"], feats["hop_length"], feats["sample_rate"]
    assert (window, hop) == (feats.get("win_length") or n_fft, hop_length)
    assert la == lookahead and hop2 == (hop_length if la else 0)
    assert total == n_fft + hop_length + lookahead * hop_length
    assert ms == round(1000 * total / rate) and khz * 1000 == rate
    assert not feats.get("use_delta", False), f"{config}: deltas read frames ahead: a live config has none"
