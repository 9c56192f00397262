"""torch CPU tensors through the same ops (the CPU reference), the torch.ops.mlafuse
registrations, and torch.compile(fullgraph=True) tracing them (skipped without torch)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import mlafuse  # noqa: E402

from npref import quant_fp8_group as np_group  # noqa: E402

FP8 = torch.float8_e4m3fn


def test_ops_are_registered():
    for name in ("quant_fp8_group", "quant_fp8_static", "quant_nvfp4", "cache_write",
                 "mla_decode"):
        assert hasattr(torch.ops.mlafuse, name), name


def test_quant_fp8_group_torch_cpu_matches_spec():
    x = (torch.randn(9, 256, generator=torch.Generator().manual_seed(0)) * 3).to(torch.bfloat16)
    q, s = mlafuse.quant_fp8_group(x, 64, column_major_scales=True, tma_aligned_scales=True)
    assert q.dtype == FP8 and s.stride() == (1, 12)
    rq, rs = np_group(x.float().numpy(), 64)
    np.testing.assert_array_equal(q.view(torch.uint8).numpy(), rq)
    np.testing.assert_array_equal(s.numpy(), rs)


def test_torch_compile_fullgraph_cpu():
    def f(x):
        q, s = mlafuse.quant_fp8_group(x, 128, column_major_scales=True)
        return q.view(torch.uint8).to(torch.int32).sum() + s.sum()

    x = torch.randn(6, 512).to(torch.bfloat16)
    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(got, f(x))


def test_workspace_bytes_takes_a_torch_device():
    assert mlafuse.mla_decode_workspace_bytes(8, 128, torch.device("cpu")) == 0
