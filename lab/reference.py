"""PyTorch reference: training throughput of loudinthecloud/pytorch-ntm's copy task, one CPU thread.

Standalone: runs under the reference venv's python (imports torch and the reference repo, never jax
or this project). lab.bench runs it as a subprocess with that python and reads one JSON object per
line from its stdout:

    .bench-reference/venv/bin/python lab/reference.py --repo .bench-reference/pytorch-ntm \
        --batch-sizes 1 16 64 256 1024 --repeats 3 --steps 20

Setting the reference up (once):
  1. fetch github:loudinthecloud/pytorch-ntm (commit 3c64937) and extract it, e.g.
     git --git-dir=<mirror> archive HEAD | tar -x -C .bench-reference/pytorch-ntm; write the hash to
     <repo>/COMMIT (or pass --commit) since an archive has no .git.
  2. In <repo>/tasks/*.py replace attrs' removed ``convert=`` keyword by ``converter=``.
  3. python3 -m venv .bench-reference/venv && .bench-reference/venv/bin/pip install torch==2.13.0 attrs numpy
     argcomplete   (always pin torch==2.13.0: that CPU wheel is on local disk; train.py imports
     argcomplete; the repo's requirements.txt is not used).

Each step is the repo's own train.train_batch (zero_grad, init_sequence, feed input + delimiter,
read out the target, BCE, backward, clip to [-10, 10], RMSprop step, its bit-error cost) on a batch
from its tasks.copytask.dataloader, with CopyTaskParams defaults (controller 100, memory 128x20,
1 read + 1 write head, lengths 1-20, RMSprop lr 1e-4 momentum 0.9 alpha 0.95). The repo draws
lengths at random; to compare fairly each timed run cycles through a shuffled permutation of all
lengths min..max (its dataloader called with min_len = max_len = L), whole cycles until at least
--steps steps and --min-seconds have passed, so the mean length is exactly 10.5. Warm-up excluded;
the best of --repeats runs is reported.
"""
import argparse
import json
import os
import random
import sys
import time


def read_commit(repo, given):
    if given:
        return given
    path = os.path.join(repo, "COMMIT")
    if os.path.exists(path):
        return open(path).read().strip()
    try:
        import subprocess
        return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=".bench-reference/pytorch-ntm")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="at least this many timed steps per run")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="and at least this long per run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--commit", default=None)
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(args.repo))
    import numpy as np
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import train  # the repo's train.py: train_batch is its per-batch training step
    from tasks.copytask import CopyTaskModelTraining, CopyTaskParams, dataloader

    commit = read_commit(args.repo, args.commit)
    for B in args.batch_sizes:
        random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)
        model = CopyTaskModelTraining(params=CopyTaskParams(batch_size=B))
        p = model.params
        lengths = list(range(p.sequence_min_len, p.sequence_max_len + 1))

        def step(L):
            _, x, y = next(dataloader(1, B, p.sequence_width, L, L))
            train.train_batch(model.net, model.criterion, model.optimizer, x, y)

        for _ in range(args.warmup):
            step(p.sequence_max_len)
        best = None
        for _ in range(args.repeats):
            n, total, lsum = 0, 0.0, 0
            while n < args.steps or total < args.min_seconds:
                random.shuffle(lengths)
                for L in lengths:  # one whole cycle: every length once
                    t0 = time.perf_counter()
                    step(L)
                    total += time.perf_counter() - t0
                    n, lsum = n + 1, lsum + L
            if best is None or total / n < best[0] / best[1]:
                best = (total, n, lsum)
        total, n, lsum = best
        print(json.dumps({"batch_size": B, "sequences_per_s": round(B * n / total, 3),
                          "ms_per_step": round(1e3 * total / n, 3), "seq_len_mean": lsum / n,
                          "steps": n, "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "commit": commit}), flush=True)


if __name__ == "__main__":
    main()
