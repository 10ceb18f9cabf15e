"""PyTorch SDPA in a process of its own, for the benchmark (run by path, not imported).

Why: when the kernels bind oneMKL (``kernels._blaslib``), MKL's layers bind their symbols
globally and capture the MKL that PyTorch's CPU build carries inside itself (here PyTorch
then fell back to one thread). In its own process PyTorch runs exactly as a user's would.

The parent (``contenders.TorchWorker``) sends pickled requests on stdin and reads pickled
``("ok", reply)`` or ``("error", text)`` on stdout:

* ``("threads", n)``: set PyTorch's intra-op pool to n (None: leave it); reply the count;
* ``("load", q, k, v, is_causal, mask)``: hold the inputs as tensors (mask: bool or None);
* ``("out",)``: one call; reply O [B, Hq, Lq, D] float32;
* ``("time", n)``: n calls back to back; reply their wall time in seconds, timed here, so
  that no pickling or pipe time is counted.

This file imports only NumPy and PyTorch: running it never loads the kernels or MKL.
"""
from __future__ import annotations

import gc
import os
import pickle
import sys
import time


def main() -> int:
    # the replies get a private copy of stdout; fd 1 itself goes to stderr, so that nothing
    # printed by Python or by torch's C++ and OpenMP code can corrupt the reply channel
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch
    import torch.nn.functional as F

    call = None
    while True:
        try:
            msg = pickle.load(requests)
        except EOFError:
            return 0
        try:
            op = msg[0]
            if op == "threads":
                if msg[1]:
                    torch.set_num_threads(int(msg[1]))
                reply = torch.get_num_threads()
            elif op == "load":
                _, q, k, v, is_causal, mask = msg
                tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
                kwargs = {"is_causal": bool(is_causal)}
                if mask is not None:
                    kwargs["attn_mask"] = torch.from_numpy(mask)

                def call(tq=tq, tk=tk, tv=tv, kwargs=kwargs):
                    with torch.inference_mode():
                        return F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True,
                                                              **kwargs)
                reply = None
            elif op == "out":
                reply = call().numpy()
            elif op == "time":  # gc off, as for the contenders timed in the parent
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    for _ in range(int(msg[1])):
                        call()
                    reply = time.perf_counter() - t0
                finally:
                    gc.enable()
            else:
                raise ValueError(f"unknown request {op!r}")
            answer = ("ok", reply)
        except Exception as e:  # reported to the parent, which raises it
            answer = ("error", f"{type(e).__name__}: {e}")
        pickle.dump(answer, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
