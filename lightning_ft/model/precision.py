"""Whether bf16 pays off where the run happens.

CPUs without native bf16 matrix instructions (AVX512-BF16 or AMX) emulate bf16 matmuls: on such a CPU (AVX2 only)
a bf16 linear layer runs about 9x slower than fp32, so bf16 precision makes training slower, not faster.
"""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """True when oneDNN has bf16 matrix kernels for this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def slow_bf16_warning(device_type: str, precision: str, model_dtype: torch.dtype) -> str | None:
    """A message when bf16 was asked for on a CPU that emulates it, else ``None``."""
    uses_bf16 = str(precision).startswith("bf16") or model_dtype == torch.bfloat16
    if device_type != "cpu" or not uses_bf16 or cpu_has_native_bf16():
        return None
    return (
        f"bf16 was asked for (precision={precision}, model dtype={model_dtype}) but this CPU has no native bf16 "
        f"matrix instructions (PyTorch CPU capability: {torch.backends.cpu.get_cpu_capability()}): bf16 matmuls are "
        "emulated and run several times slower than fp32 here. Use `trainer.precision: 32-true` and "
        "`model.model.dtype: float32` on this machine; keep bf16 for GPUs and CPUs with AVX512-BF16 or AMX."
    )
