"""Your own Q, K, V (a section at the end of the sidebar): upload, check, pick a head.

The files are read and checked by ``attnviz.upload`` (no pickle, sizes from the headers
before any data); a refusal shows its message. While "Step through my arrays" is on, the
page shows them instead of a scenario: the stepper traces the chosen query head (and the KV
head it reads), keyed by the arrays' content hash; the sizes, heads and D come from the
arrays (``upload.view_config``), the mask and blocks from the controls above; the memory
and timing panels take the arrays' shapes, the trace export names their source.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from .. import upload
from ..stats import oracle
from ..trace import run_trace
from ..viewconfig import ViewConfig
from .cache import TracedHead, build_slots, caches, head_key

FILES, HEAD, USE = "upload_files", "upload_head", "upload_use"
_LOADED = "_upload_loaded"


@dataclass(frozen=True)
class Own:
    """The uploaded arrays in use: which head, and the view configuration they give."""

    up: upload.Uploaded
    h: int  # query head traced
    cfg: ViewConfig

    def traced(self) -> TracedHead:
        """Query head h traced with the view's mask and blocks, in the server's trace cache
        (bounded by bytes, shared by sessions), keyed by the arrays' content hash."""
        key = ("upload", self.up.digest, self.h, head_key(self.cfg))
        traces = caches().traces
        if key in traces:
            return traces.get(key, lambda: _trace(key, self.up))
        with st.spinner("Tracing every tile of your arrays..."):
            return traces.get(key, lambda: _trace(key, self.up))


def _trace(key: tuple, up: upload.Uploaded) -> TracedHead:
    _, digest, h, (cfg, loops) = key
    with build_slots:
        q, k, v = up.head(h)
        trace = run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, bug=cfg.bug, loops=loops,
                          **cfg.mask_kwargs())
        O_ref, lse_ref = oracle(trace)
    return TracedHead(key, trace, O_ref, lse_ref,
                      source=f"upload {', '.join(up.sources)} sha256 {digest}, head {h}")


def _npz(own: Own) -> bytes:
    head = own.traced()
    t = head.trace
    return upload.to_npz({"q": t.q, "k": t.k, "v": t.v, "O": t.out, "LSE": t.lse,
                          "O_float64": head.O_ref, "LSE_float64": head.lse_ref})


def _loaded(files) -> upload.Uploaded | str:
    """The checked arrays of these files (read once per set of files), or the refusal."""
    ident = tuple((f.name, f.size, f.file_id) for f in files)
    got = st.session_state.get(_LOADED)
    if got is None or got[0] != ident:
        try:
            got = (ident, upload.load([(f.name, f.getvalue()) for f in files]))
        except upload.UploadError as e:
            got = (ident, str(e))
        st.session_state[_LOADED] = got
    return got[1]


def render(cfg: ViewConfig) -> Own | None:
    sb = st.sidebar
    sb.subheader("Your own Q, K, V")
    files = sb.file_uploader(
        "Upload .npy or .npz", type=["npy", "npz"], accept_multiple_files=True, key=FILES,
        help="q.npy, k.npy and v.npy, or one .npz with arrays q, k, v "
             "(np.savez(f, q=q, k=k, v=v)). Each [L, D], or [H, L, D] with a head picker; "
             f"float16/32/64; at most {upload.MAX_ARRAY_BYTES // 2**20} MiB per array, "
             "Lq <= Lk.")
    if not files:
        st.session_state.pop(_LOADED, None)
        sb.caption("Upload arrays to step through your own attention head.")
        return None
    up = _loaded(files)
    if isinstance(up, str):
        sb.error(up, icon=":material/block:")
        return None
    sb.caption(f"Loaded: {up.describe()}.")
    if not sb.toggle("Step through my arrays", value=True, key=USE):
        return None
    h = 0
    if up.Hq > 1:
        h = int(sb.number_input("Query head", 0, up.Hq - 1, key=HEAD))
        h = min(max(h, 0), up.Hq - 1)
        sb.caption(f"Query head {h} reads KV head {h // (up.Hq // up.Hkv)} "
                   f"({up.Hq} query heads, {up.Hkv} KV heads).")
    view, notices = upload.view_config(cfg, up)
    for note in notices:
        sb.warning(note, icon="⚠️")
    own = Own(up, h, view)
    sb.caption("Sizes, heads and D come from your arrays; mask, blocks and alignment from "
               "the controls above. The memory and timing panels use your arrays' shapes "
               "(the timing runs the kernels on generated inputs of those shapes: their "
               "time does not depend on the values).")
    sb.download_button("Your arrays with O and LSE (.npz)", lambda: _npz(own),
                       file_name=f"attnviz_upload_{up.digest[:12]}_head{h}.npz",
                       mime="application/octet-stream", key="dl_upload", on_click="ignore")
    return own
