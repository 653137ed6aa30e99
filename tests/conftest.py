import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


# The longest files first (measured with --durations), then the others in their usual order: under the two
# pytest-xdist workers of `make test` (--dist loadfile: each file whole on one worker) no long file starts
# near the end while the other worker has nothing left to do. In one process the order changes nothing:
# no file depends on another.
LONGEST_FIRST = ["test_docs.py", "test_gpu_check.py", "recipes/test_dsd100_recipe.py", "test_musdb_recipe.py",
                 "test_trust_stages.py", "test_run_grid.py", "test_utils_scripts.py", "test_stage_outputs.py",
                 "test_folder_recipe.py", "test_new_recipe.py", "test_mir1k_recipe.py", "test_train_ddp.py",
                 "test_init_model.py", "test_compute_feats.py"]


def pytest_collection_modifyitems(session, config, items):
    tests = Path(__file__).resolve().parent
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item):
        try:
            name = Path(str(item.fspath)).resolve().relative_to(tests).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the tests of a file keep their order
