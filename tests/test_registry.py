"""One place to extend: objectives (and networks) are registry entries, and the rest follows.

The test :func:`test_an_objective_added_from_this_file_alone` is the proof that adding an MI objective
touches two files, the registry's (here: this test registers into ``sepkit.losses.MI_LOSSES``) and a
test: with no other file edited, the configuration accepts its name (and still refuses an unknown one
in one line that lists the names), the help text and docs/config.md show it, and a training run uses
it through the normal ``python -m sepkit.bin.train`` path.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, one_thread, subprocess_env, train_args  # noqa: E402,F401

from sepkit.losses import DC_LOSSES, MI_LOSSES, chimera_loss  # noqa: E402
from sepkit.registry import Registry, RegistryError, load_plugins  # noqa: E402
from sepkit.train.config import get_parser, parse_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _gen_config_doc():
    spec = importlib.util.spec_from_file_location("gen_config_doc", REPO / "utils" / "gen_config_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def _one_line_exit(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        parse_config(argv, require_paths=False)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------ the registry itself


def test_registry_names_help_settings_and_one_line_refusals():
    reg = Registry("widget", fast=False)

    @reg.register("a", help="the first")
    def a():
        return 1

    reg.register("b", len, help="the second", fast=True)
    assert reg.names() == ("a", "b") and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg["a"] is a and reg.get("b") is len and "a" in reg and "c" not in reg and None not in reg
    assert reg.help("b") == "the second" and reg.setting("a", "fast") is False and reg.names_with("fast") == ("b",)
    assert reg.describe() == "a: the first; b: the second"
    with pytest.raises(RegistryError, match=r"^unknown widget 'c' \(known: a, b\)$"):
        reg.get("c")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", len, help="another")
    reg.register("a", a, help="the first")  # the same object again (a module imported twice) is fine
    with pytest.raises(RegistryError, match="unknown setting 'slow'"):
        reg.register("d", len, help="x", slow=True)
    with pytest.raises(RegistryError, match="one-line help"):
        reg.register("d", len, help="")
    with pytest.raises(RegistryError, match="identifier"):
        reg.register("d e", len, help="x")
    reg.unregister("b")
    assert reg.names() == ("a",)


def test_the_configuration_reads_the_registries_without_torch():
    """``--help`` stays instant: sepkit.losses (the registries) is imported, torch is not."""
    code = ("import sys; from sepkit.train.config import get_parser, default_config_yaml; "
            "h = get_parser().format_help(); default_config_yaml(); "
            "assert 'tpsa_l1' in h and 'dcw' in h, h; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_builtin_names_and_settings_are_unchanged():
    assert MI_LOSSES.names() == ("msa", "mmsa", "psa", "tpsa", "tpsa_l1")
    assert DC_LOSSES.names() == ("dc", "dcw")
    assert MI_LOSSES.names_with("needs_phase") == ("psa", "tpsa", "tpsa_l1")
    assert DC_LOSSES.names_with("scale_free") == ("dcw",)


# ------------------------------------------------------------------------------ adding an objective


def l1_mask(mask, mix_mag, src_mag, psa_target, frame_mask):
    """The toy objective: L1 mask approximation, sum_c |M_c - R_c / S| over the valid bins."""
    ref = (src_mag / mix_mag.unsqueeze(-1).clamp_min(1e-8)).clamp(0, 1)
    err = (mask - ref).abs()
    if frame_mask is not None:
        err = err * frame_mask[:, :, None, None]
    return err.sum((1, 2, 3))


@pytest.fixture
def l1_registered():
    calls = []

    def counted(*args):
        calls.append(1)
        return l1_mask(*args)

    MI_LOSSES.register("l1mask_test", counted, help="L1 mask approximation (registered by tests/test_registry.py)")
    yield calls
    MI_LOSSES.unregister("l1mask_test")


def test_an_objective_added_from_this_file_alone(l1_registered, tmp_path, capsys, one_thread):
    # the configuration: accepted, shown in --help and in docs/config.md, unknown names refused in one line
    assert parse_config(["--mi_loss", "l1mask_test"], require_paths=False).mi_loss == "l1mask_test"
    err = _one_line_exit(capsys, ["--mi_loss", "l1mask_tst"])
    assert "unknown mi_loss 'l1mask_tst' (known: msa, mmsa, psa, tpsa, tpsa_l1, l1mask_test)" in err
    assert "l1mask_test: L1 mask approximation" in " ".join(get_parser().format_help().split())
    doc = _gen_config_doc().render()
    assert "l1mask_test: L1 mask approximation" in doc  # so --check fails until docs/config.md is regenerated
    assert doc != (REPO / "docs" / "config.md").read_text()
    # the objective: chimera_loss uses the registered function, divided by TF
    g = torch.Generator().manual_seed(0)
    M, X, S = torch.rand(2, 5, 4, 2, generator=g), torch.rand(2, 5, 4, generator=g) + 0.1, torch.rand(2, 5, 4, 2, generator=g)
    out = chimera_loss({"mask": M}, X, S, alpha=0.0, mi_loss="l1mask_test")
    torch.testing.assert_close(out["mi"], l1_mask(M, X, S, None, None) / 20)
    # training through the normal command path, one epoch of two steps; the run records the objective
    corpus = make_corpus(tmp_path, n_train=4, n_valid=2, seconds=0.8)
    from sepkit.bin.train import main as train_main

    args = train_args(corpus, tmp_path / "exp", "--alpha", "0", "--mi_loss", "l1mask_test", "--epochs", "1",
                      "--batch_size", "2", "--max_steps_per_epoch", "2", "--tensorboard", "false")
    before = len(l1_registered)
    assert train_main(args) == 0
    assert len(l1_registered) - before >= 3  # 2 training steps and the validation batches
    assert yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())["mi_loss"] == "l1mask_test"
    assert "nan" not in (tmp_path / "exp" / "train.log").read_text().lower()


PLUGIN = '''
from sepkit.losses import MI_LOSSES


@MI_LOSSES.register("l1mask_plugin", help="L1 mask approximation (a plugin file)")
def l1_mask(mask, mix_mag, src_mag, psa_target, frame_mask):
    ref = (src_mag / mix_mag.unsqueeze(-1).clamp_min(1e-8)).clamp(0, 1)
    return ((mask - ref).abs() * (1 if frame_mask is None else frame_mask[:, :, None, None])).sum((1, 2, 3))
'''


def test_plugins_key_imports_a_file_of_ones_own_before_the_names_are_checked(tmp_path, capsys):
    plugin = tmp_path / "my_objectives.py"
    plugin.write_text(PLUGIN)
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"plugins: {plugin}\nmi_loss: l1mask_plugin\n")
    try:
        with pytest.raises(SystemExit):  # --print_config imports the plugins: their entries are in the comments
            parse_config(["--plugins", str(plugin), "--print_config"])
        assert "l1mask_plugin: L1 mask approximation (a plugin file)" in capsys.readouterr().out
        args = parse_config(["--config", str(conf)], require_paths=False)
        assert args.mi_loss == "l1mask_plugin" and args.plugins == str(plugin)
        assert MI_LOSSES.help("l1mask_plugin") == "L1 mask approximation (a plugin file)"
        parse_config(["--config", str(conf)], require_paths=False)  # imported once: no 'already registered'
    finally:
        if "l1mask_plugin" in MI_LOSSES:
            MI_LOSSES.unregister("l1mask_plugin")
    # without the plugin the name is unknown; a plugin that does not import is named in one line
    err = _one_line_exit(capsys, ["--mi_loss", "l1mask_plugin"])
    assert "unknown mi_loss 'l1mask_plugin'" in err
    err = _one_line_exit(capsys, ["--plugins", str(tmp_path / "nope.py")])
    assert "plugin" in err and "nope.py" in err and "no such file" in err
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written')\n")
    err = _one_line_exit(capsys, ["--plugins", str(tmp_path / "broken.py")])
    assert "RuntimeError: half written" in err
    with pytest.raises(RegistryError, match="No module named"):
        load_plugins("sepkit_no_such_module")


# ------------------------------------------------------------------------------ bodies and heads


class GRUBody(torch.nn.Module):
    """A body of this file: one bidirectional GRU (the settings every body is given; some unused)."""

    def __init__(self, input_dim, hidden, layers, dropout, batch_norm):
        super().__init__()
        self.gru = torch.nn.GRU(input_dim, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, x, lengths=None):
        return self.gru(x)[0]


@pytest.fixture
def gru_registered():
    from sepkit.nets import BODIES

    BODIES.register("gru_test", GRUBody, help="one bidirectional GRU (registered by tests/test_registry.py)")
    yield
    BODIES.unregister("gru_test")


def test_a_body_added_from_this_file_alone(gru_registered, tmp_path, capsys, one_thread):
    from sepkit.bin.train import main as train_main
    from sepkit.model_io import ModelFileError, load_model_dict

    assert parse_config(["--body", "gru_test"], require_paths=False).body == "gru_test"
    assert "unknown body 'gru_tst' (known: blstm, lstm, gru_test)" in _one_line_exit(capsys, ["--body", "gru_tst"])
    assert "| `gru_test` | one bidirectional GRU" in _gen_config_doc().render()
    corpus = make_corpus(tmp_path, n_train=4, n_valid=2, seconds=0.8)
    args = train_args(corpus, tmp_path / "exp", "--body", "gru_test", "--epochs", "1", "--batch_size", "2",
                      "--max_steps_per_epoch", "2", "--tensorboard", "false")
    assert train_main(args) == 0
    d = load_model_dict(tmp_path / "exp" / "model.pt")  # checked against the network its model_conf builds
    assert d["model_conf"]["body"] == "gru_test" and any(k.startswith("encoder.gru.") for k in d["model_state"])
    from sepkit.nets import BODIES

    BODIES.unregister("gru_test")  # where the body is not registered, the file is refused in one line
    try:
        with pytest.raises(ModelFileError, match=r"unknown body 'gru_test' \(known: blstm, lstm\)"):
            load_model_dict(tmp_path / "exp" / "model.pt")
    finally:
        BODIES.register("gru_test", GRUBody, help="one bidirectional GRU (registered by tests/test_registry.py)")


def test_the_default_body_leaves_model_conf_as_before():
    from sepkit.frontend import FeatureConfig
    from sepkit.train.trainer import build_model_conf

    conf = vars(parse_config([], require_paths=False))
    assert conf["body"] == "blstm" and "body" not in build_model_conf(conf, FeatureConfig(), 2)
    assert build_model_conf({**conf, "body": "x"}, FeatureConfig(), 2)["body"] == "x"


def test_a_head_added_from_this_file_alone():
    from sepkit.nets import HEADS, ChimeraNet

    class HalfMask(torch.nn.Module):  # every bin shared equally between the sources
        def __init__(self, n_freq, emb_dim, n_sources, activation):
            super().__init__()
            self.n_sources = n_sources

        def forward(self, z):
            return z.new_full((*z.shape[:3], self.n_sources), 1 / self.n_sources)

    HEADS.register("half_test", HalfMask, output="mask", help="1/C everywhere (tests/test_registry.py)")
    try:
        net = ChimeraNet(6, n_freq=3, hidden=4, layers=1, emb_dim=2, heads=("dc", "half_test"))
        out = net(torch.randn(2, 5, 6))
        assert set(out) == {"embedding", "mask"} and torch.equal(out["mask"], torch.full((2, 5, 3, 2), 0.5))
        assert isinstance(net.half_test_head, HalfMask) and net.mi_head is None
        HEADS.register("unit_test", lambda **kw: torch.nn.Flatten(1, 2), output="embedding", help="Z as it is")
        out = ChimeraNet(6, n_freq=3, hidden=4, layers=1, emb_dim=2, heads=("mi", "unit_test"))(torch.randn(2, 5, 6))
        assert out["mask"].shape == (2, 5, 3, 2) and out["embedding"].shape == (2, 15, 2)  # the output setting
        with pytest.raises(ValueError, match="fill the same output"):
            ChimeraNet(6, n_freq=3, hidden=4, layers=1, emb_dim=2, heads=("mi", "half_test"))
        with pytest.raises(ValueError, match=r"non-empty set of \('dc', 'mi', 'half_test', 'unit_test'\)"):
            ChimeraNet(6, n_freq=3, hidden=4, layers=1, emb_dim=2, heads=("mj",))
    finally:
        for name in ("half_test", "unit_test"):
            if name in HEADS:
                HEADS.unregister(name)


def test_builtin_networks_keep_their_weight_names():
    from sepkit.nets import BODIES, HEADS, MODELS, build_model

    assert BODIES.names() == ("blstm", "lstm") and HEADS.names() == ("dc", "mi") and MODELS.names() == ("chimera",)
    net = build_model({"type": "chimera", "input_dim": 8, "n_freq": 4, "hidden": 3, "layers": 1})
    assert sorted({k.split(".")[0] for k in net.state_dict()}) == ["encoder", "linear", "mi_head"]
    assert list(net(torch.randn(1, 2, 8))) == ["embedding", "mask"]
    with pytest.raises(ValueError, match=r"^unknown model type 'unet' \(known: chimera\)$"):
        build_model({"type": "unet", "input_dim": 8})
