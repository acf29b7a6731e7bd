"""Elastic weight consolidation (EWC; Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
networks"): a quadratic pull of every parameter back towards its anchor value, weighted by the diagonal Fisher
information of an earlier task, so weights that mattered for that task move least.

    penalty = strength / 2 * sum_i F_i * (theta_i - anchor_i) ** 2
    d penalty / d theta_i = strength * F_i * (theta_i - anchor_i)

All mappings are keyed by parameter name and hold tensors of the same shape under the same name.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def ewc_penalty(
    parameters: Mapping[str, torch.Tensor],
    anchors: Mapping[str, torch.Tensor],
    fisher: Mapping[str, torch.Tensor],
    strength: float,
) -> torch.Tensor:
    """The EWC penalty ``strength / 2 * sum_i F_i (theta_i - anchor_i)^2`` over every entry of every named tensor.

    Args:
        parameters: ``name -> (*shape)`` current values theta (any floating dtype).
        anchors: ``name -> (*shape)`` anchor values theta* (the weights before this task).
        fisher: ``name -> (*shape)`` diagonal Fisher information F (non-negative).
        strength: lambda, the penalty's weight.

    Returns:
        A float32 scalar (accumulated in float32 whatever the parameters' dtype); differentiable in ``parameters``.
    """
    terms = [
        (fisher[name].float() * (parameter.float() - anchors[name].float()).square()).sum()
        for name, parameter in parameters.items()
    ]
    if not terms:
        return torch.zeros((), dtype=torch.float32)
    return 0.5 * strength * torch.stack(terms).sum()


def ewc_gradient(
    parameters: Mapping[str, torch.Tensor],
    anchors: Mapping[str, torch.Tensor],
    fisher: Mapping[str, torch.Tensor],
    strength: float,
) -> dict[str, torch.Tensor]:
    """The exact gradient of `ewc_penalty` in each parameter: ``strength * F * (theta - anchor)``.

    Args:
        parameters: ``name -> (*shape)`` current values theta.
        anchors: ``name -> (*shape)`` anchor values theta*.
        fisher: ``name -> (*shape)`` diagonal Fisher information F.
        strength: lambda, the penalty's weight.

    Returns:
        ``name -> (*shape)`` gradients, computed in float32 and returned in each parameter's dtype; not part of any
        autograd graph.
    """
    with torch.no_grad():
        return {
            name: (strength * fisher[name].float() * (parameter.float() - anchors[name].float())).to(parameter.dtype)
            for name, parameter in parameters.items()
        }
