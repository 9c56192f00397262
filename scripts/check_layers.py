#!/usr/bin/env python3
"""Checks that dependencies point down the component table (docs/design.md, "Layers").

Two checks, each printing every violation and exiting 1 if there is one:
- includes: a file under include/mlafuse/<folder>/ or src/<folder>/ includes no
  "mlafuse/<other>/..." header of a higher layer;
- CMake: no mlafuse_component(...) lists a DEPS target of a higher layer.
Usage: scripts/check_layers.py [repo root] (default: the parent of this script's folder).
"""
import pathlib
import re
import sys

# Lowest first. A folder may include its own layer and any lower one. backends/cpu and
# backends/cuda are the backends layer; passes/ sits below backends/ (a Backend implements the
# pass's FusionCapabilities), models/ below runtime/ and app/.
LAYERS = ["core", "quant", "mla", "ir", "passes", "backends", "models", "runtime", "app"]
RANK = {name: i for i, name in enumerate(LAYERS)}
# CMake targets by the folder they build (mlafuse_cpu: the Backend interface and the CPU reference).
TARGET_RANK = {"mlafuse_core": RANK["core"], "mlafuse_quant": RANK["quant"],
               "mlafuse_mla": RANK["mla"], "mlafuse_ir": RANK["ir"],
               "mlafuse_passes": RANK["passes"], "mlafuse_cpu": RANK["backends"],
               "mlafuse_models": RANK["models"], "mlafuse_runtime": RANK["runtime"],
               "mlafuse_app": RANK["app"]}
INCLUDE = re.compile(r'^\s*#\s*include\s+"mlafuse/([a-z_]+)/')


def folder_of(path, root):
    rel = path.relative_to(root).parts
    if rel[:2] == ("include", "mlafuse") and len(rel) > 3:
        return rel[2]
    if rel[0] == "src" and len(rel) > 2:
        return rel[1]
    return None


def check_includes(root):
    bad = []
    for path in sorted(list((root / "include/mlafuse").rglob("*")) + list((root / "src").rglob("*"))):
        if path.suffix not in (".h", ".cc", ".cu", ".cuh") or not path.is_file():
            continue
        folder = folder_of(path, root)
        if folder not in RANK:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if m and m.group(1) in RANK and RANK[m.group(1)] > RANK[folder]:
                bad.append(f"{path.relative_to(root)}:{n}: {folder}/ includes {m.group(1)}/, "
                           "a higher layer")
    return bad


def check_cmake(root):
    bad = []
    text = (root / "CMakeLists.txt").read_text()
    for m in re.finditer(r"mlafuse_component\((\w+)([^)]*)\)", text):
        name, args = m.group(1), m.group(2)
        deps = args.split("DEPS", 1)[1].split() if "DEPS" in args else []
        for d in deps:
            if d in TARGET_RANK and TARGET_RANK[d] > TARGET_RANK[name]:
                bad.append(f"CMakeLists.txt: {name} depends on {d}, a higher layer")
    return bad


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else __file__).resolve()
    if len(sys.argv) == 1:
        root = root.parent.parent
    bad = check_includes(root) + check_cmake(root)
    for b in bad:
        print(b)
    print(f"check_layers: {len(bad)} violation(s) of " + " < ".join(LAYERS))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
