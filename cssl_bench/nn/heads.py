"""MLP heads built from a block spec.

``mlp([in, hidden, ..., out], bn=True, last_bn=False, last_bn_affine=True, bias=True)``: Linear layers
between consecutive dims, each hidden one followed by BatchNorm1d (when ``bn``) and ReLU. The last
Linear has no ReLU; ``last_bn`` adds a BatchNorm on the output (SimSiam's projector, affine off).
"""

from __future__ import annotations

import torch.nn as nn


def mlp(
    dims: list[int], bn: bool = True, last_bn: bool = False, last_bn_affine: bool = True, bias: bool | None = None
) -> nn.Sequential:
    if len(dims) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    layers: list[nn.Module] = []
    n = len(dims) - 1
    for i in range(n):
        last = i == n - 1
        use_bias = (not bn) if bias is None else bias
        if last and not last_bn and bias is None:
            use_bias = True
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=use_bias))
        if not last:
            if bn:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_bn_affine))
    return nn.Sequential(*layers)
