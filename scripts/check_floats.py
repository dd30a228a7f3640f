"""Check the compiled float formatting (service/_shortest.h) against orjson on every
float32 there is: 2**32 bit patterns, about 3-5 minutes on one core.

    .venv/bin/python scripts/check_floats.py [--start CHUNK] [--chunks N]

The compiled HTTP answer renders float and float_vector features itself; orjson's
rendering (what ViewCodec.decode_row gives) is the reference, and the two must be the
same bytes. CI checks random and edge values of both widths (tests/core/test_native.py);
this covers every float32 once, for changes to the formatting code. Exit 1 on the
first chunk that differs, with the values.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import orjson

from service import native

CHUNK_BITS = 24


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, default=0, help="first chunk (of 256)")
    parser.add_argument("--chunks", type=int, default=1 << (32 - CHUNK_BITS))
    args = parser.parse_args()
    if native.IMPLEMENTATION != "compiled":
        print("service._native is not built: nothing to check", file=sys.stderr)
        return 1
    size = 1 << CHUNK_BITS
    began = time.monotonic()
    for chunk in range(args.start, min(args.start + args.chunks, 1 << (32 - CHUNK_BITS))):
        bits = np.arange(chunk * size, (chunk + 1) * size, dtype=np.uint64).astype(np.uint32)
        values = bits.view(np.float32)
        values = values[np.isfinite(values)]
        mine = native.json_numbers(values.tobytes(), 4)
        ours = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
        if mine != ours:
            pairs = zip(mine[1:-1].split(b","), ours[1:-1].split(b","), values, strict=True)
            wrong = [(float(v), a, b) for a, b, v in pairs if a != b]
            print(f"chunk {chunk}: {len(wrong)} values differ, e.g. {wrong[:5]}")
            return 1
        if chunk % 16 == 15:
            print(f"{chunk + 1} chunks of {size:,} bit patterns: same bytes "
                  f"({time.monotonic() - began:.0f} s)", flush=True)  # fmt: skip
    print(f"every float32 checked: the same bytes as orjson {orjson.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
