"""What normalizing one Asteria frame costs, counted in instructions (callgrind), which a
busy machine does not change the way it changes timings.

    python bench/normalize_cost.py          # 2,000 frames, seed-shaped where the simulator has them
    python bench/normalize_cost.py --profile light --frames 5000

Runs this script twice under `valgrind --tool=callgrind`: once making the frames only,
once making them and passing each through `normalize_frame` (decode, normalize, check,
id, the entity's JSON); the difference over the frames is the instructions per frame.
Both runs first normalize 200 frames, so that what is made once per type (the check's
and the digest's per-Struct functions, msgspec's decoders) is not counted per frame.
Also prints a digest of the events made, so two versions of the code can be checked to
make the same ids and data. Needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime


def frames(n: int, profile: str) -> list[bytes]:
    from streamd.providers.asteria import simulator, wire

    kw = {"profile": profile} if "profile" in inspect.signature(simulator.event).parameters else {}
    return [wire.encode_frame(*simulator.event(i, **kw)) for i in range(n)]  # type: ignore[arg-type]


def inner(n: int, profile: str, passes: int) -> None:
    from streamd.providers.asteria.normalize import normalize_frame

    made = frames(n, profile)
    now = datetime(2026, 12, 4, tzinfo=UTC)
    for f in made[:200]:  # made once per type (plans, codecs): not what a frame costs
        normalize_frame(f, source="bench", received_at=now)
    digest = hashlib.sha256()
    for _ in range(passes):
        for f in made:
            for ev in normalize_frame(f, source="bench", received_at=now):
                digest.update(ev.id.encode() + ev.data)
    print(digest.hexdigest()[:16])


def counted(n: int, profile: str, passes: int) -> tuple[int, str]:
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          __file__, "--inner", "--frames", str(n), "--profile", profile, "--passes",
                          str(passes)], capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise SystemExit(f"no instruction count from callgrind: {out.stderr[-2000:]}")
    return int(found.group(1)), out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--profile", default="seed", help="the simulator's frames, where it has profiles")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args.frames, args.profile, args.passes)
        return
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    base, _ = counted(args.frames, args.profile, 0)
    total, digest = counted(args.frames, args.profile, 1)
    print(f"normalize_frame: {(total - base) // args.frames:,} instructions per frame "
          f"({args.frames:,} '{args.profile}' frames; events digest {digest})")


if __name__ == "__main__":
    main()
