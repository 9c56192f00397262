#!/usr/bin/env python3
"""Where an MLA decode CTA's time goes, from the kernel's %globaltimer stamps.

Build with -DMLAFUSE_SEESAW_STAMPS=ON (a diagnostic build: never time it against the normal one),
run one case, e.g. `MLAFUSE_STAMPS_FILE=s.bin build/bench/bench_mla_decode --case 128,4096,128`
(the file holds the last launch of the seesaw kernel), then `python3 bench/seesaw_stamps.py s.bin`.
Phases of a CTA (thread 0's view): launch skew (its start after the grid's first), pdl wait, plan
(its first segment known), then a segment at a time: q wait (segment top to Q landed), first S,
main (first S to the last pair's end), sync+next (the __syncthreads, the next segment found and
its loads issued), out write, seg gap (to the next segment's top), then end and tail idle (to the
grid's last CTA's end).
"""
import struct, sys
import numpy as np

SEGMENT_SLOTS = 80  # slots 80 + 8w: warpgroup w's leader's cycle counters (96-slot rows)
COUNTERS = ['S issue + chunk waits', 'named-barrier waits', 'wgmma waits']


def counters(a):
    """Per warpgroup: the pair loops' cycles, split by what the leader waited on (clock64)."""
    # ns a cycle, from thread 0's own entry/exit in both clocks
    ns_per_cycle = np.median((a[:, 5] - a[:, 1]) / np.maximum(a[:, SEGMENT_SLOTS + 5] - a[:, SEGMENT_SLOTS + 4], 1))
    print(f'  pair loops, leaders\' clock64 ({1 / ns_per_cycle:.2f} GHz); means over CTAs:')
    for w in range(2):
        c = a[:, SEGMENT_SLOTS + 8 * w:SEGMENT_SLOTS + 8 * w + 8].astype(float)
        loop = c[:, 3]
        pairs = max(c[:, 6].sum(), 1)
        line = f'    wg{w}: loop {loop.mean() * ns_per_cycle / 1e3:7.2f} us, {loop.sum() / pairs:6.0f} cycles a pair'
        for i, name in enumerate(COUNTERS):
            line += f'; {name} {100 * c[:, i].sum() / max(loop.sum(), 1):4.1f}% ({c[:, i].sum() / pairs:5.0f} a pair)'
        print(line)


def load(path):
    b = open(path, 'rb').read()
    gx, gy, slots = struct.unpack('<3i', b[:12])
    a = np.frombuffer(b[12:], dtype=np.uint64).reshape(-1, slots).astype(np.int64)
    return gx, gy, slots, a

def main(path):
    gx, gy, slots, a = load(path)
    n = gx * gy
    a = a[:n]
    t0 = a[:, 1].min()
    span = a[:, 5].max() - t0
    ph = {k: [] for k in ['launch skew', 'pdl wait', 'plan', 'q wait', 'first S', 'main',
                          'sync+next', 'out write', 'seg gap', 'end', 'tail idle']}
    tiles_tot = 0; main_tot = 0; segs = []; whole_n = 0
    for r in a:
        nseg = int(r[4])
        ph['launch skew'].append(r[1] - t0)
        ph['pdl wait'].append(r[2] - r[1])
        ph['plan'].append(r[3] - r[2])
        prev = r[3]
        qw = fs = mn = sn = ow = sg = 0
        for k in range(min(nseg, (min(slots, SEGMENT_SLOTS) - 8) // 7)):
            b = 8 + 7 * k
            beg, ql, fsd, pe, iss, od, info = r[b:b + 7]
            tiles = int(info) & 0xffff; whole = (int(info) >> 16) & 1
            sg += beg - prev
            qw += ql - beg; fs += fsd - ql; mn += pe - fsd; sn += iss - pe; ow += od - iss
            prev = od
            tiles_tot += tiles; main_tot += pe - ql; whole_n += whole
            segs.append((tiles, pe - ql, ql - beg))
        ph['q wait'].append(qw); ph['first S'].append(fs); ph['main'].append(mn)
        ph['sync+next'].append(sn); ph['out write'].append(ow); ph['seg gap'].append(sg)
        ph['end'].append(r[5] - prev); ph['tail idle'].append(t0 + span - r[5])
    print(f'{path}: grid {gx}x{gy}, span {span/1e3:.1f} us, segments {len(segs)} '
          f'({whole_n} whole), tiles {tiles_tot}, {len(segs)/n:.2f} segs/CTA, {tiles_tot/n:.1f} tiles/CTA')
    tot = sum(np.mean(v) for v in ph.values())
    for k, v in ph.items():
        v = np.array(v) / 1e3
        print(f'  {k:12s} mean {v.mean():7.2f} us  max {v.max():7.2f}  ({100*v.mean()/ (span/1e3):5.1f}% of span)')
    print(f'  sum of means {tot/1e3:.1f} us; Q landed->pairs end per tile {main_tot/tiles_tot/1e3:.3f} us')
    segs = np.array(segs, dtype=float)
    for lo, hi in [(1, 4), (4, 8), (8, 16), (16, 32), (32, 1 << 20)]:
        m = (segs[:, 0] >= lo) & (segs[:, 0] < hi)
        if m.any():
            print(f'  segs of {lo}-{hi-1} tiles: {m.sum():4d}, per tile {np.sum(segs[m,1])/np.sum(segs[m,0])/1e3:.3f} us, '
                  f'q wait mean {segs[m,2].mean()/1e3:.2f} us')
    if slots >= SEGMENT_SLOTS + 16:
        counters(a)

for p in sys.argv[1:]:
    main(p)
