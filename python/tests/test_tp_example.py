"""examples/deepseek_v3_tp_decode.py in its one-process mode: tp = 2, 4, 8 shards run one after
another must give, rank by rank, the single-GPU FP8 codes and scales of their heads bit for bit,
and an all-reduced o_proj output within tolerance (the script exits 1 otherwise). Skipped
without torch; the CUDA case also without a GPU or a CUDA build."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import mlafuse  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "deepseek_v3_tp_decode.py")


def run(*args):
    r = subprocess.run([sys.executable, SCRIPT, "--no-timing", *args], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(not (torch.cuda.is_available() and mlafuse.built_with_cuda),
                    reason="needs a CUDA GPU and a CUDA build")
@pytest.mark.parametrize("page,batch", [(64, 9), (16, 9), (64, 17), (64, 128)])
def test_shards_equal_single_gpu_cuda(page, batch):
    # Lengths cross part boundaries: 700 tokens = 11 tiles, the last one partial, with 24 splits.
    # B = 17: the combine tiles differ between H = 128 (one 32-row tile) and the shards (16-row
    # tiles, row 16 alone in its tile), so both merge paths must round alike. B = 128: H = 128
    # streams W_UV through a ring (64-row tiles, two CTAs an SM, mma.sync), while tp = 2 holds it
    # whole (64-row tiles, one wave, wgmma): the two MMAs' W_UV products must round alike too.
    out = run("--simulate", "2,4,8", "--batch", str(batch), "--context", "700", "--page",
              str(page), "--splits", "24")
    assert out.count("every rank: True") == 3, out


def test_shards_equal_single_gpu_cpu():
    out = run("--device", "cpu", "--simulate", "2,8", "--batch", "2", "--context", "90",
              "--hidden", "256")
    assert out.count("every rank: True") == 2, out
