"""egs/mir1k/chimera/results/reanalyse_claims.py: the committed reanalysis is what the script makes from the
committed COMPARE.md, and one row's interval and p-value agree with a direct numerical integration."""
import importlib.util
import math
import re
from pathlib import Path

import pytest
from scipy import integrate, optimize
from scipy.stats import norm, t

RESULTS = Path(__file__).resolve().parents[1] / "egs" / "mir1k" / "chimera" / "results"


def _script():
    spec = importlib.util.spec_from_file_location("reanalyse_claims", RESULTS / "reanalyse_claims.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_reanalysis_is_reproduced(tmp_path, capsys):
    out = tmp_path / "r.md"
    assert _script().main([str(RESULTS / "paper_claims_COMPARE.md"), str(out)]) == 0
    assert out.read_text() == (RESULTS / "paper_claims_reanalysis.md").read_text()
    bad = tmp_path / "bad.md"
    bad.write_text("# nothing here\n")
    assert _script().main([str(bad), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "bad.md: no claim rows" in err and "\n" not in err


def test_one_row_by_numerical_integration():
    # CHI_0.5-MI > MI, mir1k_test, GNSDR, vocals: -1.15 [-1.36, -0.94]; seed sd 0.07 (CHI_0.5-MI), 0.12 (MI)
    va, vb = 0.07 ** 2 / 3, 0.12 ** 2 / 3
    se, df = math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    file_sd = math.sqrt(((-0.94 + 1.36) / (2 * norm.ppf(0.975))) ** 2 - se ** 2)

    def cdf(x):  # P(-1.15 + file_sd Z + se T_df <= x)
        return integrate.quad(lambda z: norm.pdf(z) * t.cdf((x + 1.15 - file_sd * z) / se, df), -9, 9)[0]

    lo, hi = (optimize.brentq(lambda x: cdf(x) - q, -5, 3) for q in (0.025, 0.975))
    p = 2 * (1 - cdf(0.0))
    text = (RESULTS / "paper_claims_reanalysis.md").read_text()
    row = re.search(r"^\| CHI_0.5-MI > MI \| mir1k_test \| GNSDR \| vocals \|.*$", text, re.M).group(0)
    cells = [c.strip() for c in row.strip("|").split("|")]
    new_lo, new_hi = (float(v) for v in cells[8].strip("[]").split(","))
    assert (new_lo, new_hi) == (pytest.approx(lo, abs=0.006), pytest.approx(hi, abs=0.006))
    assert float(cells[9]) == pytest.approx(p, rel=0.02, abs=2e-4)
    assert cells[6] == "reversed" and cells[10] == "reversed"
