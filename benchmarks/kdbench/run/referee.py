"""Who is failed when what a group's cells share has changed (:mod:`kdbench.train.isolation`).

The group's runner asks after each piece of plugin code that runs outside the training steps (a
cell's start, with its constructor and ``prepare``; its ``on_epoch_end``; its end of epoch, with the
evaluation of its ``eval_model``; its finish) and once after each epoch's steps. A change found
after one cell's code is that cell's: it fails, naming what it changed. A change found after an
epoch's steps cannot be pinned on one cell of a lockstep group (checking after every step would
cost a pass over the data each step), so every cell that trained in that epoch fails: each of them
trained on the changed inputs.

Then the teacher is restored and the other cells go on, untouched: no cell of theirs ran between
the change and its discovery. Data cannot be restored: every cell of this process still running
fails instead, so none records ``ok`` on changed inputs; a rerun resumes them from their last
checkpoints, each saved before the change.
"""

from __future__ import annotations

from kdbench.train.cell import CellRun
from kdbench.train.isolation import InputGuard


class Referee:
    def __init__(self, guard: InputGuard, runs: list[CellRun]) -> None:
        self.guard, self.runs = guard, runs

    def at_start(self) -> None:
        """Before the group starts: if shared data changed earlier in this process, none starts."""
        if self.guard.spoiled is not None:
            for run in self.runs:
                run.stop(self.guard.spoiled)

    def check(self, suspects: list[CellRun], what: str) -> None:
        """After ``what`` (the code of ``suspects``, one cell's or an epoch's steps): fail whoever
        changed the shared parts, and, where they cannot be restored, every cell still running."""
        if self.guard.spoiled is not None:  # every cell still running has been stopped already
            return
        changed = self.guard.changed()
        if not changed:
            return
        parts = " and ".join(changed)
        names = ", ".join(run.spec.entry.label for run in suspects)
        restored = self.guard.restore()
        after = "; the teacher was restored and the group's other cells go on" if restored else ""
        if len(suspects) == 1:
            message = f"IsolationError: {names} changed {parts}, which every cell of its group shares, in {what}"
        else:
            message = (f"IsolationError: {parts} changed during {what}, in which {names} trained on them; which "
                       "one changed them is not known (run them one at a time, --no-lockstep, to find out)")
        for run in suspects:
            if run.status == "ok":  # one that failed already keeps its own error
                run.stop(message + after)
        if not restored:
            self.guard.spoiled = (f"IsolationError: not run on {parts}, changed by {names} in {what}; rerunning "
                                  f"resumes this cell from its last checkpoint, from before the change")
            for run in self.runs:
                if run.status == "ok" and not run.ended:
                    run.stop(self.guard.spoiled)
