"""An experiment: ``profile_step.py`` with the "view" split BN's per-group coefficients rounded to the
activations' dtype (bf16 under autocast) instead of fp32. Faster on a GPU (one dtype: no per-element casts in
the multiply-add), less exact (x * scale + shift loses |mean| / std * 2^-9 to cancellation); the library keeps
fp32. Same arguments as ``profile_step.py``:

    python benchmarks/profile_step_bf16coef.py moco-v2 --device cuda --precision bf16 --channels-last \\
        --config r50-224 --label view-bf16coef
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cssl_bench.methods.base as base  # noqa: E402

base._coef = lambda t, x: t.to(x.dtype)

import profile_step  # noqa: E402

if __name__ == "__main__":
    sys.exit(profile_step.main(sys.argv[1:]))
