"""Episode 2 — DeepSeek Basics: the building blocks every later episode reuses.

A numerically stable softmax, RMSNorm (computed in float32 and cast back, as
DeepSeek does), the SiLU activation, and the SwiGLU feed-forward network
``w2(silu(w1 x) * w3 x)`` with DeepSeek's names: ``w1`` gate, ``w3`` up, ``w2`` down.

Shapes: ``(..., dim)`` inputs; ``inter_dim`` is the hidden width of the MLP.
"""

import torch
from torch import nn


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax along ``dim``.

    Subtracting the maximum before exponentiating leaves the result unchanged
    (the factor ``e^{-max}`` cancels) and keeps ``exp`` from overflowing, so
    ``softmax(x + 1000)`` equals ``softmax(x)``. Entries equal to ``-inf`` get
    weight 0 (a row that is entirely ``-inf`` gives NaN, as ``torch.softmax`` does).
    Computed in the dtype of ``x``.

    Args:
        x (torch.Tensor): Any shape, float.
        dim (int): Axis to normalise. Defaults to -1.

    Returns:
        torch.Tensor: Same shape and dtype as ``x``; non-negative, sums to 1 along ``dim``.

    Example:
        >>> softmax(torch.tensor([1000.0, 1000.0, float("-inf")]))
        tensor([0.5000, 0.5000, 0.0000])
    """
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square normalisation, computed in float32 and cast back.

    ``y = x / sqrt(mean(x², last axis) + eps) * weight``. As DeepSeek-V3 does,
    a bfloat16/float16 input is upcast to float32, normalised *and multiplied by
    the weight* in float32, and only then cast back to the input dtype (casting
    before the weight multiply rounds twice). Wider inputs keep their precision:
    float32 stays float32 and float64 stays float64 (upcast to at least float32,
    never down).

    Args:
        x (torch.Tensor): ``(..., dim)``, any float dtype.
        weight (torch.Tensor): ``(dim,)`` scale, any float dtype.
        eps (float): Added to the mean square (inside the square root). Defaults to 1e-6.

    Returns:
        torch.Tensor: ``(..., dim)`` in the dtype of ``x``.

    Example:
        >>> rms_norm(torch.tensor([[3.0, 4.0]]), torch.ones(2))
        tensor([[0.8485, 1.1314]])
    """
    ### BEGIN SOLUTION
    wide = torch.promote_types(x.dtype, torch.float32)  # bfloat16 -> float32; float64 stays float64
    xw = x.to(wide)
    y = xw * torch.rsqrt(xw.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(wide)).to(x.dtype)
    ### END SOLUTION


class RMSNorm(nn.Module):
    """RMSNorm layer with a learned scale (DeepSeek-V3's ``RMSNorm``).

    Args:
        dim (int): Width of the last axis.
        eps (float): Stability constant. Defaults to 1e-6.

    Attributes:
        weight (nn.Parameter): ``(dim,)`` scale, initialised to ones.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises the last axis of ``x``.

        Args:
            x (torch.Tensor): ``(..., dim)``, any float dtype.

        Returns:
            torch.Tensor: ``(..., dim)`` in the dtype of ``x`` (computed in float32).

        Example:
            >>> RMSNorm(4)(torch.randn(2, 3, 4)).shape
            torch.Size([2, 3, 4])
        """
        ### BEGIN SOLUTION
        return rms_norm(x, self.weight, self.eps)
        ### END SOLUTION


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (swish) activation, ``x · sigmoid(x)``.

    Args:
        x (torch.Tensor): Any shape, float.

    Returns:
        torch.Tensor: Same shape and dtype.

    Example:
        >>> silu(torch.tensor([0.0, 1.0])).round(decimals=4)
        tensor([0.0000, 0.7311])
    """
    ### BEGIN SOLUTION
    return x * torch.sigmoid(x)
    ### END SOLUTION


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """SwiGLU feed-forward with weight matrices in ``nn.Linear`` layout ``(out, in)``.

    ``w2(silu(w1 x) * w3 x)``: ``w1`` is the gate, ``w3`` the up projection,
    ``w2`` the down projection (DeepSeek's naming).

    Args:
        x (torch.Tensor): ``(..., dim)``, float.
        w1 (torch.Tensor): Gate weight ``(inter_dim, dim)``.
        w2 (torch.Tensor): Down weight ``(dim, inter_dim)``.
        w3 (torch.Tensor): Up weight ``(inter_dim, dim)``.

    Returns:
        torch.Tensor: ``(..., dim)``, dtype of ``x``.

    Example:
        >>> x = torch.randn(2, 5, 4)
        >>> swiglu(x, torch.randn(8, 4), torch.randn(4, 8), torch.randn(8, 4)).shape
        torch.Size([2, 5, 4])
    """
    ### BEGIN SOLUTION
    return (silu(x @ w1.T) * (x @ w3.T)) @ w2.T
    ### END SOLUTION


class MLP(nn.Module):
    """SwiGLU MLP (DeepSeek-V3's ``MLP``; also its experts and shared experts).

    Args:
        dim (int): Input and output width.
        inter_dim (int): Hidden width.

    Attributes:
        w1 (nn.Linear): Gate projection ``dim → inter_dim``, no bias.
        w2 (nn.Linear): Down projection ``inter_dim → dim``, no bias.
        w3 (nn.Linear): Up projection ``dim → inter_dim``, no bias.
    """

    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)
        self.w2 = nn.Linear(inter_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, inter_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``w2(silu(w1(x)) * w3(x))``.

        Args:
            x (torch.Tensor): ``(..., dim)``, float.

        Returns:
            torch.Tensor: ``(..., dim)``, same dtype.

        Example:
            >>> MLP(4, 8)(torch.randn(2, 3, 4)).shape
            torch.Size([2, 3, 4])
        """
        ### BEGIN SOLUTION
        return self.w2(silu(self.w1(x)) * self.w3(x))
        ### END SOLUTION
