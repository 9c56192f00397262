#!/usr/bin/env python3
"""Plots of one benchmark run from the JSON that bench/device.sh writes.

    python3 bench/plot.py --out DIR [--date D] [--device NAME] [--commit SHA] FILE.json...

Each FILE is recognised by its content: bench_mla_decode --json ("cases") or bench_quant --json
("rows"). Written, for the inputs given:
  decode_floor.png  floor / time of the fused path, our unfused chain and the PyTorch baseline for
                    every (B, ctx), one panel per H, with the floor at 1.0 (needs decode JSON);
  roofline.png      arithmetic intensity vs achieved TFLOP/s: the run's measured ceilings and
                    every decode case (fused path) and quantization case as a point;
  quant_gbps.png    quantization GB/s against T, with the measured copy ceiling (needs quant JSON).

Titles carry the device, date and commit: the JSON's "device", "date" and "commit" fields, or the
flags, which win. A plot whose run has no date or commit is an error, not a blank in the title.
Ceilings: either JSON's "ceilings" {"read_gbs", "copy_gbs", "gemm_tflops"} (the decode JSON's
first), and the quant JSON's "copy_gbps"; --peak-tflops / --peak-gbps add ceilings a run did not
measure.
"""

import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on the GPU machine or in CI
import matplotlib.pyplot as plt  # noqa: E402

DPI = 120

# FLOP per element of a quantization (no FLOP count is in the quant JSON): the amax compare and
# the scale multiply. A convention for placing the cases on the roofline; they sit far left of the
# ridge at any small count, which is the point the chart makes.
QUANT_FLOP_PER_ELEMENT = 2.0


class InputError(Exception):
    pass


def need(obj, key, where):
    if key not in obj:
        raise InputError(f"{where}: missing field '{key}'")
    return obj[key]


def need_number(obj, key, where):
    v = need(obj, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{where}: field '{key}' is not a finite number: {v!r}")
    return float(v)


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: {e}") from e
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a JSON object")
    if "cases" in doc:
        kind = "decode"
        for i, c in enumerate(doc["cases"]):
            where = f"{path}: cases[{i}]"
            for k in ("B", "ctx", "H", "fused_us", "unfused_us", "torch_us", "floor_us", "bytes",
                      "flop"):
                need_number(c, k, where)
            for k in ("fused_us", "unfused_us", "floor_us", "bytes", "flop"):
                if c[k] <= 0:
                    raise InputError(f"{where}: field '{k}' must be positive, got {c[k]}")
    elif "rows" in doc:
        kind = "quant"
        if "copy_gbps" not in doc:  # the copy ceiling, under either spelling
            doc["copy_gbps"] = need_number(doc.get("ceilings", {}), "copy_gbs",
                                           f"{path}: 'copy_gbps' or ceilings")
        need_number(doc, "copy_gbps", path)
        for i, r in enumerate(doc["rows"]):
            where = f"{path}: rows[{i}]"
            need(r, "name", where)
            for k in ("T", "D", "us", "gbps", "torch_us"):
                need_number(r, k, where)
    else:
        raise InputError(f"{path}: neither decode JSON ('cases') nor quant JSON ('rows')")
    return kind, doc


def run_meta(doc, path, args):
    """(device, date, commit) of one run: flags over JSON fields; missing is an error."""
    meta = []
    for key in ("device", "date", "commit"):
        v = getattr(args, key) or doc.get(key)
        if not v:
            raise InputError(f"{path}: no '{key}' field; pass --{key}")
        meta.append(str(v))
    return tuple(meta)


def title(what, meta):
    device, date, commit = meta
    return f"{what}\n{device}, {date}, commit {commit}"


def save(fig, out_dir, name):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(path)
    return path


def plot_decode(doc, meta, out_dir):
    cases = doc["cases"]
    heads = sorted({int(c["H"]) for c in cases})
    have_torch = any(c["torch_us"] > 0 for c in cases)
    series = [("fused", "fused_us", "tab:blue"), ("our unfused", "unfused_us", "tab:orange")]
    if have_torch:
        series.append(("PyTorch", "torch_us", "tab:green"))
    fig, axes = plt.subplots(len(heads), 1, figsize=(11, 3.6 * len(heads)), squeeze=False)
    top = 1.0
    for ax, h in zip(axes[:, 0], heads):
        rows = sorted((c for c in cases if int(c["H"]) == h),
                      key=lambda c: (c.get("K", 1), c["B"], c["ctx"]))
        width = 0.8 / len(series)
        for k, (label, key, color) in enumerate(series):
            xs, ys = [], []
            for i, c in enumerate(rows):
                if c[key] > 0:  # torch_us is 0 where the baseline did not run
                    xs.append(i + (k - (len(series) - 1) / 2) * width)
                    ys.append(c["floor_us"] / c[key])
            ax.bar(xs, ys, width, label=label, color=color)
            top = max([top] + ys)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="floor")
        ax.set_xticks(range(len(rows)))
        # BxK: K query tokens a sequence (multi-token prediction)
        ax.set_xticklabels([f"B={int(c['B'])}" + (f"x{int(c['K'])}" if c.get("K", 1) > 1 else "")
                            + f"\nctx={int(c['ctx'])}" for c in rows], fontsize=8)
        ax.set_ylabel("floor / time")
        ax.set_title(f"H = {h}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylim(0, top * 1.1)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=len(series) + 1)
    note = "" if have_torch else " (no PyTorch baseline in this run)"
    fig.suptitle(title("MLA decode: fraction of the floor reached" + note, meta), fontsize=11)
    fig.tight_layout()
    return save(fig, out_dir, "decode_floor.png")


def quant_points(doc):
    """(name, T, arithmetic intensity, TFLOP/s) of the quantization rows that do arithmetic."""
    points = []
    for r in doc["rows"]:
        name = r["name"]
        # "(best)" rows repeat a case with a swept launch shape; cache writes and copies do no
        # arithmetic, so they have no place on a FLOP axis.
        if not name.startswith("quant_") or "(best)" in name or r["us"] <= 0 or r["gbps"] <= 0:
            continue
        bytes_moved = r["gbps"] * r["us"] * 1e3  # GB/s * us
        flop = QUANT_FLOP_PER_ELEMENT * r["T"] * r["D"]
        points.append((name, r["T"], flop / bytes_moved, flop / r["us"] / 1e6))
    return points


def ceilings(decode, quant, args):
    """Measured memory ceilings (label, GB/s) and compute ceilings (label, TFLOP/s)."""
    mem, compute = [], []
    for doc in (decode, quant):
        if doc is None:
            continue
        c = doc.get("ceilings", {})
        for key, label, out in (("read_gbs", "read", mem), ("copy_gbs", "copy", mem),
                                ("gemm_tflops", "bf16 GEMM", compute)):
            if key in c and not any(have == label for have, _ in out):
                out.append((label, need_number(c, key, "ceilings")))
    if quant is not None and not any(label == "copy" for label, _ in mem):
        mem.append(("copy", quant["copy_gbps"]))
    if args.peak_gbps:
        mem.append(("--peak-gbps", args.peak_gbps))
    if args.peak_tflops:
        compute.append(("--peak-tflops", args.peak_tflops))
    return mem, compute


def plot_roofline(decode, quant, meta, args, out_dir):
    mem, compute = ceilings(decode, quant, args)
    if not mem and not compute:
        raise InputError("roofline: the JSON has no measured ceilings; pass --peak-gbps or "
                         "--peak-tflops")
    fig, ax = plt.subplots(figsize=(9, 6))
    xs_all, ys_all = [], []
    if decode is not None:
        markers = {16: "o", 32: "s", 64: "^", 128: "D"}
        for h in sorted({int(c["H"]) for c in decode["cases"]}):
            cs = [c for c in decode["cases"] if int(c["H"]) == h]
            xs = [c["flop"] / c["bytes"] for c in cs]
            ys = [c["flop"] / c["fused_us"] / 1e6 for c in cs]
            ax.scatter(xs, ys, marker=markers.get(h, "o"), label=f"decode fused, H={h}", zorder=3)
            xs_all += xs
            ys_all += ys
    if quant is not None:
        pts = quant_points(quant)
        for name in sorted({p[0] for p in pts}):
            sel = [p for p in pts if p[0] == name]
            ax.scatter([p[2] for p in sel], [p[3] for p in sel], marker="x", label=name, zorder=3)
            xs_all += [p[2] for p in sel]
            ys_all += [p[3] for p in sel]
    if not xs_all:
        raise InputError("roofline: no decode case and no quantization case to place")
    lo = min(xs_all) / 4
    hi = max(xs_all) * 4
    for _, tflops in compute:  # show the ridge point of each compute ceiling
        for _, gbs in mem:
            hi = max(hi, 4 * tflops * 1e3 / gbs)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    peak = max((t for _, t in compute), default=math.inf)
    for label, gbs in mem:
        ys = [min(x * gbs / 1e3, peak) for x in grid]
        ax.plot(grid, ys, linestyle="--", linewidth=1.2, label=f"{label} {gbs:.0f} GB/s (measured)")
    for label, tflops in compute:
        ax.axhline(tflops, color="gray", linewidth=1.2, label=f"{label} {tflops:.0f} TFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(ys_all) / 4, max(ys_all + [t for _, t in compute]) * 2)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    if quant is not None:
        note = f"quantization: {QUANT_FLOP_PER_ELEMENT:g} FLOP per element (amax, scale)"
        ax.text(0.01, 0.99, note, transform=ax.transAxes, fontsize=7, va="top")
    ax.set_title(title("Roofline: decode (fused) and quantization cases", meta), fontsize=11)
    fig.tight_layout()
    return save(fig, out_dir, "roofline.png")


def plot_quant(doc, meta, out_dir):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # The cache write and the copy kernel rows of the same JSON are not quantizations.
    rows = [r for r in doc["rows"] if r["name"].startswith("quant_")]
    if not rows:
        raise InputError("quant JSON: no quant_* rows")
    for name in sorted({r["name"] for r in rows}):
        sel = sorted((r for r in rows if r["name"] == name and r["us"] > 0), key=lambda r: r["T"])
        if sel:
            ax.plot([r["T"] for r in sel], [r["gbps"] for r in sel], marker="o", label=name)
    # torch.compile's GB/s for the same bytes: ours * (our time / its time).
    tor = sorted((r for r in rows if r["name"] == "quant_fp8_group" and r["torch_us"] > 0),
                 key=lambda r: r["T"])
    if tor:
        ax.plot([r["T"] for r in tor], [r["gbps"] * r["us"] / r["torch_us"] for r in tor],
                marker="s", linestyle=":", color="black", label="torch.compile quant_fp8_group")
    ax.axhline(doc["copy_gbps"], color="red", linestyle="--",
               label=f"copy ceiling {doc['copy_gbps']:.0f} GB/s (measured)")
    ax.set_xscale("log")
    ax.set_xlabel("T (tokens)")
    ax.set_ylabel("achieved GB/s (bytes read + written)")
    ax.set_ylim(0, doc["copy_gbps"] * 1.15)
    ax.grid(which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left")
    d = sorted({int(r["D"]) for r in rows})
    ax.set_title(title(f"Quantization of [T, {', '.join(map(str, d))}] bf16", meta), fontsize=11)
    fig.tight_layout()
    return save(fig, out_dir, "quant_gbps.png")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", nargs="+", help="bench_mla_decode / bench_quant --json output")
    p.add_argument("--out", required=True, help="folder for the PNG files (created)")
    p.add_argument("--date", help="the run's date, over the JSON's 'date'")
    p.add_argument("--device", help="the device name, over the JSON's 'device'")
    p.add_argument("--commit", help="the commit benchmarked, over the JSON's 'commit'")
    p.add_argument("--peak-tflops", type=float, help="a compute ceiling to draw (TFLOP/s)")
    p.add_argument("--peak-gbps", type=float, help="a memory ceiling to draw (GB/s)")
    args = p.parse_args(argv)
    try:
        docs = {}
        for path in args.json:
            kind, doc = load(path)
            if kind in docs:
                raise InputError(f"{path}: a second {kind} JSON ({docs[kind][0]} came first)")
            docs[kind] = (path, doc, run_meta(doc, path, args))
        os.makedirs(args.out, exist_ok=True)
        decode = docs.get("decode")
        quant = docs.get("quant")
        if decode and quant and decode[2] != quant[2]:
            raise InputError(f"{decode[0]} and {quant[0]} are from different runs ({decode[2]} "
                             f"vs {quant[2]}); one roofline needs one run, or the same "
                             f"--device/--date/--commit for both")
        if decode:
            plot_decode(decode[1], decode[2], args.out)
        plot_roofline(decode[1] if decode else None, quant[1] if quant else None,
                      (decode or quant)[2], args, args.out)
        if quant:
            plot_quant(quant[1], quant[2], args.out)
    except InputError as e:
        print(f"plot.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
