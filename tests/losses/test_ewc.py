"""The EWC penalty and its gradient against the closed form on hand-written tensors."""

from __future__ import annotations

import torch

from lightning_ft.losses.ewc import ewc_gradient, ewc_penalty

STRENGTH = 4.0


def tensors(dtype: torch.dtype = torch.float32) -> tuple[dict, dict, dict]:
    """Two named tensors: ``w`` (2 entries) and ``b`` (a 1x1 matrix)."""
    parameters = {"w": torch.tensor([1.0, 2.0], dtype=dtype), "b": torch.tensor([[-1.0]], dtype=dtype)}
    anchors = {"w": torch.tensor([0.0, 1.0], dtype=dtype), "b": torch.tensor([[1.0]], dtype=dtype)}
    fisher = {"w": torch.tensor([2.0, 3.0]), "b": torch.tensor([[0.5]])}
    return parameters, anchors, fisher


def test_penalty_is_half_the_strength_times_the_fisher_weighted_squared_deviation():
    """Deviations theta - theta*: w -> [1, 1], b -> [[-2]].
    sum F d^2 = 2*1 + 3*1 + 0.5*4 = 7; penalty = strength / 2 * 7 = 4 / 2 * 7 = 14."""
    penalty = ewc_penalty(*tensors(), strength=STRENGTH)
    assert penalty.dtype == torch.float32
    assert penalty.item() == 14.0


def test_gradient_is_strength_times_fisher_times_deviation():
    """strength * F * d: w -> 4 * [2*1, 3*1] = [8, 12]; b -> 4 * 0.5 * -2 = [[-4]]."""
    gradient = ewc_gradient(*tensors(), strength=STRENGTH)
    assert torch.equal(gradient["w"], torch.tensor([8.0, 12.0]))
    assert torch.equal(gradient["b"], torch.tensor([[-4.0]]))


def test_gradient_is_the_autograd_gradient_of_the_penalty():
    generator = torch.Generator().manual_seed(0)
    shapes = {"weight": (3, 4), "bias": (4,), "norm": (1,)}
    parameters = {name: torch.randn(shape, generator=generator).requires_grad_() for name, shape in shapes.items()}
    anchors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    fisher = {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}
    ewc_penalty(parameters, anchors, fisher, strength=0.7).backward()
    expected = ewc_gradient(parameters, anchors, fisher, strength=0.7)
    for name, parameter in parameters.items():
        torch.testing.assert_close(parameter.grad, expected[name], atol=1e-7, rtol=1e-6, msg=name)


def test_low_precision_parameters_accumulate_in_float32_and_keep_their_dtype_in_the_gradient():
    """The same numbers in bf16 are exact (small integers and halves), so the results are the float32 ones."""
    parameters, anchors, fisher = tensors(torch.bfloat16)
    assert ewc_penalty(parameters, anchors, fisher, STRENGTH).dtype == torch.float32
    assert ewc_penalty(parameters, anchors, fisher, STRENGTH).item() == 14.0
    gradient = ewc_gradient(parameters, anchors, fisher, STRENGTH)
    assert gradient["w"].dtype == torch.bfloat16
    assert gradient["w"].tolist() == [8.0, 12.0]


def test_no_parameters_give_a_zero_penalty():
    assert ewc_penalty({}, {}, {}, strength=1.0).item() == 0.0
