"""PyTorch SDPA for the benchmark: the one call, and a process of its own to run it in.

Why a process of its own: when the kernels bind oneMKL (``kernels._blaslib``), MKL's layers
bind their symbols globally and capture the MKL that PyTorch's CPU build carries inside
itself (here PyTorch then fell back to one thread). In its own process PyTorch runs exactly
as a user's would.

Both sides live here. ``TorchWorker`` (the parent) starts this file by path in isolated mode
(``python -I``), sends pickled requests on its stdin and reads pickled ``("ok", reply)`` or
``("error", text)`` from its stdout; ``main`` (the worker) serves them:

* ``("threads", n)``: set PyTorch's intra-op pool to n (None: leave it); reply the count;
* ``("load", q, k, v, is_causal, mask)``: hold the inputs as tensors (mask: bool or None);
* ``("load_backward", q, k, v, dout, is_causal, mask)``: run the forward once with autograd,
  then each call is its backward alone (``sdpa_backward_call``);
* ``("out",)``: one call; reply O [B, Hq, Lq, D] float32 (or the backward's dq, dk, dv);
* ``("time", n)``: n calls back to back, gc off; reply their wall time in seconds, timed
  there, so that no pickling or pipe time is counted.

Only the standard library is imported at the top (and NumPy/PyTorch inside functions):
running this file never loads the kernels or MKL.
"""
from __future__ import annotations

import atexit
import gc
import os
import pickle
import subprocess
import sys
import time


def sdpa_call(q, k, v, is_causal: bool, mask):
    """A zero-argument call of ``scaled_dot_product_attention`` on q, k, v (NumPy arrays,
    shared with the tensors; GQA by ``enable_gqa``) with ``is_causal`` or a bool ``mask``
    (True = attend, None: none), returning O as a tensor."""
    import torch
    import torch.nn.functional as F

    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))  # zero-copy views
    kwargs = {"is_causal": bool(is_causal)}
    if mask is not None:
        kwargs["attn_mask"] = torch.from_numpy(mask)

    def call():
        with torch.inference_mode():
            return F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True, **kwargs)

    return call


def sdpa_backward_call(q, k, v, dout, is_causal: bool, mask):
    """A zero-argument call of the backward pass alone of ``scaled_dot_product_attention``:
    the forward runs once here with autograd (graph retained), each call then runs
    ``torch.autograd.grad`` from ``dout`` and returns (dq, dk, dv) as tensors."""
    import torch
    import torch.nn.functional as F

    tq, tk, tv = (torch.from_numpy(x).requires_grad_(True) for x in (q, k, v))
    kwargs = {"is_causal": bool(is_causal)}
    if mask is not None:
        kwargs["attn_mask"] = torch.from_numpy(mask)
    out = F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True, **kwargs)
    tdout = torch.from_numpy(dout)

    def call():
        return torch.autograd.grad(out, (tq, tk, tv), tdout, retain_graph=True)

    return call


# --- the parent's side -------------------------------------------------------------------------

class TorchWorker:
    """This file in a subprocess: the inputs go over a pipe once per case, and the worker
    times its own calls."""

    def __init__(self):
        # -I: isolated, so neither this folder nor PYTHONPATH is on its path (nothing of ours)
        self.proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, *msg):
        try:
            pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, reply = pickle.load(self.proc.stdout)
        except (EOFError, OSError):
            raise RuntimeError(f"the torch worker exited (code {self.proc.wait()})") from None
        if status != "ok":
            raise RuntimeError(f"torch worker: {reply}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RemoteCall:
    """A torch call in the worker: ``call()`` returns O (to check it), ``timed(n)`` the
    worker's own time for n calls (what ``measure.time_round_robin`` records)."""

    def __init__(self, worker: TorchWorker):
        self.worker = worker

    def __call__(self):
        return self.worker.ask("out")

    def timed(self, n: int) -> float:
        return self.worker.ask("time", n)


_WORKER: TorchWorker | None = None


def worker() -> TorchWorker:
    """The one worker of this process, started on first use (again if it died)."""
    global _WORKER
    if _WORKER is not None and _WORKER.proc.poll() is not None:  # died (e.g. out of memory)
        _WORKER = None
    if _WORKER is None:
        _WORKER = TorchWorker()
        atexit.register(_WORKER.close)
    return _WORKER


def threads(n: int | None = None) -> int | None:
    """Set (n) and report PyTorch's thread count, wherever it runs; None: not loaded."""
    if _WORKER is not None:
        return _WORKER.ask("threads", n)
    if "torch" in sys.modules:
        if n:
            sys.modules["torch"].set_num_threads(n)
        return sys.modules["torch"].get_num_threads()
    return None


# --- the worker's side -------------------------------------------------------------------------

def main() -> int:
    # the replies get a private copy of stdout; fd 1 itself goes to stderr, so that nothing
    # printed by Python or by torch's C++ and OpenMP code can corrupt the reply channel
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

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
                call = sdpa_call(*msg[1:])
                reply = None
            elif op == "load_backward":
                call = sdpa_backward_call(*msg[1:])
                reply = None
            elif op == "out":
                result = call()
                reply = (tuple(x.numpy() for x in result) if isinstance(result, tuple)
                         else result.numpy())
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
