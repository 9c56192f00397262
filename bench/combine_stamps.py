#!/usr/bin/env python3
"""Where the decode combine's time goes (combine + W_UV + quant), from its %globaltimer stamps.

Build with -DMLAFUSE_SEESAW_STAMPS=ON (a diagnostic build: never time it against the normal one),
run one case, e.g.
  MLAFUSE_STAMPS_FILE=s.bin MLAFUSE_COMBINE_STAMPS_FILE=c.bin \\
      build/bench/bench_mla_decode --case 16,4096,128
then `python3 bench/combine_stamps.py c.bin [s.bin]`. Each file holds its kernel's last launch.
Phases of a CTA (thread 0's view): pdl wait (entry to the attention's completion), listing (the
merging rows found), weights (split entries' slots and log-sum-exps loaded, normalized weights),
merge (the rounds of 16 partials; thread 0's last add), A ready (the copies and TMA boxes of the
latent tile in, everyone's merge done), MMA (o_lat @ W_UV[h], W_UV's waits included), epilogue.
With the attention's file of the same chain, times are also given from its last CTA's exit.
"""
import struct, sys
import numpy as np

ROUNDS = 6  # slots 10 .. 15: ends of thread 0's first merge rounds


def load(path):
    b = open(path, 'rb').read()
    gx, gy, slots = struct.unpack('<3i', b[:12])
    a = np.frombuffer(b[12:], dtype=np.uint64).reshape(-1, slots).astype(np.int64)
    return gx, gy, slots, a[:gx * gy]


def stats(v):
    v = np.asarray(v, dtype=float) / 1e3
    return f'mean {v.mean():7.2f}  min {v.min():7.2f}  max {v.max():7.2f} us'


def main(path, attn_path=None):
    gx, gy, _, a = load(path)
    info = a[:, 9]
    real = info != 0  # CTAs with a real token tile (the others only wait and leave)
    if not real.any():
        print(f'{path}: grid {gx}x{gy}, no CTA with real tokens')
        return
    r = a[real]
    info = info[real]
    merging = info & 0xffff
    entries = (info >> 16) & 0xffff
    tm = int((info[0] >> 32) & 0xff)
    by_tma = int(((info >> 40) & 1).sum())
    stages = int((info[0] >> 48) & 0xff)
    t0 = a[:, 1].min()
    print(f'{path}: grid {gx}x{gy} ({real.sum()} with tokens), {tm}-row tiles, W_UV '
          f'{"whole" if stages == 8 else f"ring of {stages}"}, o_lat tile by TMA in {by_tma}; '
          f'merging rows a CTA mean {merging.mean():.1f} (max {merging.max()}), split entries '
          f'mean {entries.mean():.1f} (max {entries.max()})')
    print(f'  span {(a[:, 8].max() - t0) / 1e3:.2f} us from the first CTA\'s entry; CTA entries '
          f'{stats(a[:, 1] - t0)}')
    phases = [('pdl wait', 1, 2), ('listing', 2, 3), ('weights', 3, 4), ('merge', 4, 5),
              ('A ready', 5, 6), ('MMA', 6, 7), ('epilogue', 7, 8)]
    for name, s0, s1 in phases:
        print(f'  {name:9s} {stats(r[:, s1] - r[:, s0])}')
    m = entries > 0
    if m.any():
        prev = r[m, 4]
        for k in range(ROUNDS):
            have = entries[m] > 16 * k
            if not have.any():
                break
            end = r[m, 10 + k]
            print(f'    merge round {k}: {stats((end - prev)[have])}  ({have.sum()} CTAs)')
            prev = np.where(have, end, prev)
    if attn_path:
        _, _, _, s = load(attn_path)
        a_first, a_last = s[:, 1].min(), s[:, 5].max()
        if not (a_first <= t0 <= a_last + 1_000_000):
            print(f'  {attn_path}: not the same chain (its last launch ends '
                  f'{(t0 - a_last) / 1e3:.1f} us from this one\'s start)')
            return
        print(f'  from the attention\'s last CTA exit ({attn_path}, span '
              f'{(a_last - a_first) / 1e3:.1f} us):')
        for name, slot in [('pdl_wait returns', 2), ('merge done', 5), ('A ready', 6),
                           ('MMA done', 7), ('exit', 8)]:
            print(f'    {name:16s} {stats(r[:, slot] - a_last)}')


if __name__ == '__main__':
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
