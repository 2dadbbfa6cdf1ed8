"""No training step makes the host wait for the device: the built-in plugins train a small run under
the guard of tests/no_sync.py (those that wait are listed), and made-up plugins that each wait in one
way fail their cell alone."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import yaml
from kdbench.api.method import Method
from kdbench.api.registry import method_names
from kdbench.cli import main
from kdbench.config.suite import SUITES_DIR

from tests.no_sync import NoSync
from tests.plugins import registered


def _assign_by_mask(z, y):
    w = z.clone()
    w[z < 0] = 0.0


#: name: (what the step does to its detached logits z and labels y, the start of the cell's error)
WAITS = {
    "reads_its_loss": (lambda z, y: F.cross_entropy(z, y).item(), "Tensor.item in"),
    "branches_on_a_tensor": (lambda z, y: 1 if (z > 0).any() else 0, "Tensor.__bool__ in"),
    "lists_its_logits": (lambda z, y: z.tolist(), "Tensor.tolist in"),
    "converts_to_float": (lambda z, y: float(z[0, 0]), "Tensor.__float__ in"),
    "converts_to_int": (lambda z, y: int(y[0]), "Tensor.__int__ in"),
    "converts_to_complex": (lambda z, y: complex(z[0, 0]), "Tensor.__complex__ in"),
    "indexes_a_list_by_a_tensor": (lambda z, y: [0, 1][y[0] % 2], "Tensor.__index__ in"),
    "copies_to_the_cpu": (lambda z, y: z.cpu(), "cpu brings its result to the host in"),
    "compares_with_equal": (lambda z, y: torch.equal(z, z), "equal brings its result to the host in"),
    "compares_with_allclose": (lambda z, y: torch.allclose(z, z), "allclose brings its result to the host in"),
    "calls_is_nonzero": (lambda z, y: torch.is_nonzero(y[:1]), "is_nonzero brings its result to the host in"),
    "selects_by_a_mask": (lambda z, y: z[z > 0], "indexing with a boolean mask in"),
    "selects_rows_by_a_mask": (lambda z, y: z[y == 0, :], "indexing with a boolean mask in"),
    "assigns_by_a_mask": (_assign_by_mask, "indexing with a boolean mask in"),
    "puts_by_a_mask": (lambda z, y: z.clone().index_put_((z > 0,), torch.tensor(0.0)), "index_put_ with a boolean mask in"),
    "calls_nonzero": (lambda z, y: torch.nonzero(z > 0), "nonzero's output size depends on values in"),
    "calls_nonzero_as_a_method": (lambda z, y: (z > 0).nonzero(as_tuple=True), "nonzero's output size depends on values in"),
    "calls_argwhere": (lambda z, y: torch.argwhere(z > 0), "argwhere's output size depends on values in"),
    "calls_where_alone": (lambda z, y: torch.where(z > 0), "torch.where(condition) (the nonzero form) in"),
    "calls_masked_select": (lambda z, y: z.masked_select(z > 0), "masked_select's output size depends on values in"),
    "calls_unique": (lambda z, y: torch.unique(y), "unique's output size depends on values in"),
    "calls_unique_as_a_method": (lambda z, y: y.unique(return_counts=True), "unique's output size depends on values in"),
    "calls_unique_consecutive": (lambda z, y: torch.unique_consecutive(y), "unique_consecutive's output size depends on values in"),
    "calls_bincount": (lambda z, y: torch.bincount(y), "bincount's output size depends on values in"),
    "repeats_by_a_tensor": (lambda z, y: z.repeat_interleave(y, dim=0), "repeat_interleave with tensor repeats and no output_size in"),
    "repeats_by_counts": (lambda z, y: torch.repeat_interleave(y), "repeat_interleave with tensor repeats and no output_size in"),
}


#: Built-in plugins whose step waits, and the first wait the guard meets (docs/speed.md names them).
#: bregman_pca solves the teacher's code by per-sample Newton steps on a shrinking active set.
BUILT_IN_WAITS = {"bregman_pca": "nonzero's output size depends on values in"}


def _waits_for_nothing(z, y):
    """The forms of the same operations that keep their output's size known: all allowed."""
    n = len(y)
    z[y]
    z.masked_fill(z > 0, 0.0)
    torch.where(z > 0, z, 0.0)
    y.repeat_interleave(2)
    y.repeat_interleave(torch.full_like(y, 2), output_size=2 * n)
    torch.nonzero_static(z > 0, size=4)


def plugin(name: str, does) -> type[Method]:
    """A plugin training on cross-entropy whose step also calls ``does(logits, labels)``."""
    def losses(self, s, t, y, progress):
        does(s.logits.detach(), y)
        return {"ce": F.cross_entropy(s.logits, y)}
    return type(name, (Method,), {"name": name, "paper": "test plugin", "losses": losses, "__doc__": plugin.__doc__})


def test_no_training_step_makes_the_host_wait(needs_fashion_mnist, tmp_path, monkeypatch):
    raw = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    raw.update(name="nosync", train_size=300, test_size=100, train={**raw["train"], "epochs": 1})
    raw["teacher"]["train_size"] = 300
    made_up = [plugin(name, does) for name, (does, _) in WAITS.items()] + [plugin("waits_for_nothing", _waits_for_nothing)]
    raw["methods"] = [*method_names(), *(p.name for p in made_up)]
    path = tmp_path / "nosync.yaml"
    path.write_text(yaml.safe_dump(raw))
    NoSync(monkeypatch)
    with registered(*made_up):
        assert main(["run", str(path), "--seeds", "0", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    recs = {r["method"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "nosync" / "runs").glob("*.json"))}
    assert NoSync.steps >= 3 * (len(method_names()) + 1)
    # the teacher's passes are armed beyond each step's own forward pass, and so is each batch drawn
    assert NoSync.regions["taps"] > NoSync.steps and NoSync.regions["batch"] > 3
    expected = {**{name: why for name, (_, why) in WAITS.items()}, **BUILT_IN_WAITS}
    errors = {name: recs.pop(name)["error"] or "" for name in expected}
    assert {name: errors[name] for name, why in expected.items()
            if not errors[name].startswith(f"AssertionError: {why} a training step: a host sync")} == {}
    assert sorted(recs) == sorted({*method_names(), "waits_for_nothing"} - set(BUILT_IN_WAITS))
    assert {m: r["error"] for m, r in recs.items() if r["status"] != "ok"} == {}
