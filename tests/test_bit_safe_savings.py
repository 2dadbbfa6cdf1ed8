"""The speed-ups that must not change a bit (docs/speed.md, "Bit-safe savings"): a small suite
trained with all of them is bitwise the same as with each one switched off. (That a rerun gives the
same bits at all is tested in test_end_to_end.py.)"""

from __future__ import annotations

import json

import pytest
import yaml
from kdbench.api.registry import method_names
from kdbench.cli import main
from kdbench.config.suite import SUITES_DIR
from kdbench.train import cell as cell_module
from kdbench.train import environment, loop

from tests.test_end_to_end import SMALL, same_results


def _second_test_pass(monkeypatch):
    """The kernel gap's features from a pass of their own, as before they were taken from the last
    evaluation's."""
    real = cell_module.test_pass
    monkeypatch.setattr(cell_module, "test_pass", lambda *a, **k: (real(*a, **k)[0], None))


SWITCHED_OFF = {
    "NaN fill of new tensors": lambda mp: mp.setattr(environment, "FILL_UNINITIALIZED_MEMORY", True),
    "SGD without foreach": lambda mp: mp.setattr(loop, "SGD_FOREACH", False),
    "a second test pass for the kernel gap": _second_test_pass,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, needs_fashion_mnist):
    """A one-epoch suite of every method on 600 images, and its teacher folder (shared by every run)."""
    folder = tmp_path_factory.mktemp("savings")
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="tiny", seeds=[0], **{k: v for k, v in SMALL.items() if k != "teacher"})
    raw["train"]["epochs"] = 1
    raw["teacher"]["train_size"] = SMALL["teacher"]["train_size"]
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--results-dir", str(folder / "warm"), "--no-progress", "--threads", "2"]) == 0
    return path, folder


@pytest.mark.parametrize("switched_off", list(SWITCHED_OFF))
def test_each_saving_leaves_the_records_bitwise_the_same(tiny, switched_off, tmp_path, monkeypatch):
    path, folder = tiny
    results = tmp_path / "r"
    results.mkdir()
    (results / "teachers").symlink_to(folder / "warm" / "teachers", target_is_directory=True)
    SWITCHED_OFF[switched_off](monkeypatch)
    assert main(["run", str(path), "--results-dir", str(results), "--no-progress", "--threads", "2"]) == 0
    runs = sorted((folder / "warm" / "tiny" / "runs").glob("*.json"))
    assert len(runs) == len(method_names())
    for f in runs:
        with_savings, without = json.loads(f.read_text()), json.loads((results / "tiny" / "runs" / f.name).read_text())
        assert with_savings["status"] == "ok" and with_savings["diagnostics"]["kernel_gap_test"] is not None
        assert same_results(with_savings, without), f"{f.name}: {switched_off} changed it"
