#!/usr/bin/env python3
"""Writes the malformed .npy files of tests/data/bad_inputs.tsv (bad_*.npy here). Run from this
folder; the files are checked in, so the tests need no Python."""
import struct

H = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }"


def npy(header, payload=b"", major=1):
    d = header.encode()
    prefix = 10 if major == 1 else 12
    d += b" " * ((64 - (prefix + len(d) + 1) % 64) % 64) + b"\n"
    hl = struct.pack("<H", len(d)) if major == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([major, 0]) + hl + d + payload


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


files = {
    "empty": b"",
    "magic": b"PK\x03\x04 a zip file, not a .npy file",
    "version": b"\x93NUMPY\x09\x00\x00\x00",
    "truncated_header": b"\x93NUMPY\x01\x00\xff\x00{'descr'",
    "not_a_dict": npy("['<f4', False, (2,)]", f32(1, 2)),
    "unknown_key": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1, }", f32(1, 2)),
    "repeated_key": npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                        f32(1, 2)),
    "no_shape": npy("{'descr': '<f4', 'fortran_order': False, }", f32(1, 2)),
    "f64": npy(H % ("<f8", "False", "(1, 16)"), b"\0" * 128),
    "big_endian": npy(H % (">f4", "False", "(1, 16)"), b"\0" * 64),
    "fortran": npy(H % ("<f4", "True", "(1, 16)"), b"\0" * 64),
    "shape_not_tuple": npy(H % ("<f4", "False", "(2)"), f32(1, 2)),
    "shape_negative": npy(H % ("<f4", "False", "(-1, 16)"), b"\0" * 64),
    "shape_float": npy(H % ("<f4", "False", "(1.5, 16)"), b"\0" * 64),
    "shape_2p40": npy(H % ("<f4", "False", "(1099511627776, 16)"), b"\0" * 64),
    "truncated_data": npy(H % ("<f4", "False", "(2, 16)"), b"\0" * 64),
    "trailing_bytes": npy(H % ("<f4", "False", "(1, 16)"), b"\0" * 64 + b"junk"),
    "huge_shape": npy(H % ("<f4", "False", "(1099511627775, 1099511627775)"), b"\0" * 64),
    "empty_wrapping_strides": npy(H % ("<f4", "False", "(0, 1099511627775, 1099511627775)")),
    "no_newline": npy(H % ("<f4", "False", "(1, 16)"), b"\0" * 64)[:-65] + b" " + b"\0" * 64,
    "i32": npy(H % ("<i4", "False", "(1, 16)"), b"\0" * 64),
    "rank3": npy(H % ("<f4", "False", "(1, 1, 16)"), b"\0" * 64),
    "rank1": npy(H % ("<f4", "False", "(16,)"), b"\0" * 64),
    "d100": npy(H % ("<f4", "False", "(1, 100)"), b"\0" * 400),
    "d24": npy(H % ("<f4", "False", "(1, 24)"), f32(*([1.0] * 24))),
    "zeros": npy(H % ("<f4", "False", "(2, 128)"), b"\0" * 1024),
    "inf": npy(H % ("<f4", "False", "(1, 128)"), f32(*([float("inf")] + [1.0] * 127))),
    "nan": npy(H % ("<f4", "False", "(1, 128)"), f32(*([float("nan")] * 128))),
    "tiny": npy(H % ("<f4", "False", "(1, 128)"), f32(*([1e-37] + [0.0] * 127))),
}
for name, data in files.items():
    with open("bad_%s.npy" % name, "wb") as f:
        f.write(data)
