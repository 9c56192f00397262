#!/usr/bin/env python3
"""bench/plot.py turns the sample JSON in tests/data/bench into valid PNG files, and refuses
inputs it cannot title or read. Run by ctest (plot_py); matplotlib comes from scripts/setup.sh.

    python3 tests/plot/plot_test.py REPO_ROOT
"""

import os
import struct
import subprocess
import sys
import tempfile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the IHDR chunk; fails unless the file is a whole PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE, f"{path}: no PNG signature"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13, f"{path}: first chunk is not IHDR"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{path}: does not end with IEND"
    return struct.unpack(">II", data[16:24])


def edited_copy(src, dst, old, new):
    """dst: src with the first `old` replaced by `new` (which must be there)."""
    with open(src) as f:
        text = f.read()
    assert old in text, f"{src}: no {old!r}"
    with open(dst, "w") as f:
        f.write(text.replace(old, new, 1))
    return dst


def run(root, out, *args):
    cmd = [sys.executable, os.path.join(root, "bench", "plot.py"), "--out", out, *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def main():
    root = sys.argv[1]
    data = os.path.join(root, "tests", "data", "bench")
    decode = os.path.join(data, "bench_mla_decode.json")
    quant = os.path.join(data, "bench_quant.json")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("matplotlib is missing: run scripts/setup.sh (it installs it for bench/plot.py)")

    with tempfile.TemporaryDirectory() as tmp:
        # Both files; the quant JSON has no date or commit, so the flags supply them.
        out = os.path.join(tmp, "all")
        r = run(root, out, "--date", "2026-12-01", "--commit", "0123abc", decode, quant)
        assert r.returncode == 0, f"plot.py failed:\n{r.stdout}{r.stderr}"
        # Figure sizes in plot.py at 120 dpi: decode 11 x 3.6 per H panel (two H), roofline
        # 9 x 6, quant 9 x 5.5.
        expected = {"decode_floor.png": (1320, 864), "roofline.png": (1080, 720),
                    "quant_gbps.png": (1080, 660)}
        assert sorted(os.listdir(out)) == sorted(expected), os.listdir(out)
        for name, size in expected.items():
            path = os.path.join(out, name)
            n = os.path.getsize(path)
            assert 20_000 <= n <= 1_000_000, f"{name}: {n} bytes, outside 20 KB .. 1 MB"
            assert png_size(path) == size, f"{name}: {png_size(path)} pixels, expected {size}"
            assert path in r.stdout, f"plot.py did not name {path}"

        # The decode JSON carries its own device, date and commit: no flags needed.
        out = os.path.join(tmp, "decode")
        r = run(root, out, decode)
        assert r.returncode == 0, f"plot.py failed:\n{r.stdout}{r.stderr}"
        assert sorted(os.listdir(out)) == ["decode_floor.png", "roofline.png"], os.listdir(out)

        # The quant JSON may carry its copy ceiling as the decode JSON does ("ceilings").
        respelled = edited_copy(quant, os.path.join(tmp, "ceilings_quant.json"),
                                '"copy_gbps": 2785.0', '"ceilings": {"copy_gbs": 2785.0}')
        out = os.path.join(tmp, "quant")
        r = run(root, out, "--date", "2026-12-01", "--commit", "0123abc", respelled)
        assert r.returncode == 0, f"plot.py failed:\n{r.stdout}{r.stderr}"
        assert sorted(os.listdir(out)) == ["quant_gbps.png", "roofline.png"], os.listdir(out)

        # Without a commit for the quant run the title cannot be written: an error naming the flag.
        r = run(root, os.path.join(tmp, "untitled"), quant)
        assert r.returncode == 2 and "--date" in r.stderr, r.stderr

        # Two runs on one roofline are refused unless the flags say they are one.
        other = edited_copy(quant, os.path.join(tmp, "other_quant.json"), '{"device"',
                            '{"date": "2026-12-01", "commit": "fedcba9", "device"')
        r = run(root, os.path.join(tmp, "mixed"), decode, other)
        assert r.returncode == 2 and "different runs" in r.stderr, r.stderr

        # A case without its timing is named, not plotted.
        broken = edited_copy(decode, os.path.join(tmp, "broken.json"), '"fused_us"', '"fused"')
        r = run(root, os.path.join(tmp, "broken"), broken)
        assert r.returncode == 2 and "cases[0]: missing field 'fused_us'" in r.stderr, r.stderr
    print("plot_test: ok")


if __name__ == "__main__":
    main()
