"""Cost accounting stored in every run record: parameter counts and inference FLOPs.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one input at inference, in its
convention: a multiply-accumulate is 2 FLOPs; elementwise ops (BN, ReLU, pooling) are not counted.
"""

from __future__ import annotations

import torch
from kdbench.api.tapped import TappedModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_counts(student: TappedModel, method: nn.Module, eval_model: nn.Module) -> dict[str, int]:
    """``student``: the zoo network alone (with the head a method gave it, if it replaced the
    classifier); ``extra_trainable``: everything else the optimizer trains (the method's modules and
    modules it injected into the student); ``inference``: the network evaluated at test time,
    injected modules included, frozen ones (an imported layer) too."""
    injected = count_parameters(student.injections)
    base = count_parameters(student) - injected
    return {
        "student": base,
        "extra_trainable": count_parameters(method, trainable_only=True)
        + count_parameters(student.injections, trainable_only=True),
        "inference": count_parameters(eval_model),
    }


@torch.no_grad()
def inference_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> int:
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
