"""Memory layouts the kernels read in place, and the output allocation shared by the kernels and the ops' fakes
(a fake must return exactly the strides of the real op). Plain torch: importable without Triton."""

import torch


def is_dense(x: torch.Tensor) -> bool:
    """Stored NCHW-contiguous, or (4-D) NHWC channels_last: the two layouts the kernels walk without a copy."""
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def is_channels_last(x: torch.Tensor) -> bool:
    """True when x is stored NHWC and not also plain-contiguous (C = 1 or H·W = 1 make both hold)."""
    return not x.is_contiguous() and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when dense; otherwise a contiguous copy (strided views are the only inputs that get copied)."""
    return x if is_dense(x) else x.contiguous()


def output_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An op's output for input x: x's own layout when dense, else contiguous; x's dtype unless ``dtype`` is given."""
    dtype = dtype or x.dtype
    return torch.empty_like(x, dtype=dtype) if is_dense(x) else torch.empty(x.shape, dtype=dtype, device=x.device)
