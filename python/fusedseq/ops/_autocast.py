"""Autocast rules for the forward ops, registered from Python.

Inside ``torch.autocast`` a forward op runs in the autocast dtype (float16 or
bfloat16, whichever the region asked for), as PyTorch's own ``rnn`` and
``scaled_dot_product_attention`` do; the kernels still accumulate in fp32.
Like ATen's lower-precision casts, only float32 tensors of the autocast
device are cast: float64 stays float64. (The stable ABI has no autocast API,
so this lives here rather than in the C++ bindings.)
"""
from __future__ import annotations

import torch

_LIB = torch.library.Library("fusedseq", "IMPL")


def _cast(value, device_type: str, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.float32 and value.device.type == device_type:
            return value.to(dtype)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, device_type, dtype) for v in value)
    return value


def register(op_name: str) -> None:
    """Registers the autocast rule of ``fusedseq::<op_name>`` for every
    device type that has autocast and a kernel of ours (cpu, cuda)."""
    op = getattr(torch.ops.fusedseq, op_name).default
    for device_type in ("cpu", "cuda"):
        key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        excluded = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def kernel(_keyset, *args, _device_type=device_type, _excluded=excluded):
            dtype = torch.get_autocast_dtype(_device_type)
            with torch._C._ExcludeDispatchKeyGuard(_excluded):
                return op(*_cast(args, _device_type, dtype))

        _LIB.impl(op_name, kernel, key, with_keyset=True)
