"""Your own Q, K, V: load ``.npy`` / ``.npz`` files safely and check them for the stepper.

Files come as (name, bytes) pairs: ``q.npy``, ``k.npy``, ``v.npy`` (the stem names the role),
or one ``.npz`` whose members are ``q``, ``k`` and ``v`` (``np.savez(f, q=q, k=k, v=v)``),
or a mix. Each array is [L, D] or [H, L, D] (q [Hq, Lq, D], k/v [Hkv, Lk, D], with
Hq % Hkv == 0: query head h reads KV head h // (Hq / Hkv)).

Nothing a file says is trusted before it is checked:

* the format: the ``.npy`` magic string and a header of at most ``MAX_HEADER`` bytes, read
  with NumPy's own ``read_magic`` / ``read_array_header_1_0`` / ``_2_0``;
* the size: shape x item size from the header, at most ``MAX_ARRAY_BYTES``, checked BEFORE
  any data is read (a zip member's declared size too);
* the dtype from the header: float16/32/64 only (object arrays would need pickle and are
  never loaded; ``allow_pickle=False`` everywhere);
* then the values: finite after conversion to float32, scores that cannot overflow float32,
  and the sizes the stepper can trace.

Every refusal is an ``UploadError`` (a ValueError) whose message names the file, what it
holds and what is allowed.
"""
from __future__ import annotations

import hashlib
import io
import math
import struct
import zipfile
from dataclasses import dataclass, replace

import numpy as np

from .viewconfig import D_OPTIONS, MAX_H, MAX_TRACE_LEN, ViewConfig, clamp

MAX_ARRAY_BYTES = 64 * 2**20  # per array, as its header declares it
MAX_HEADER = 10_000  # bytes of .npy header (NumPy's own default limit)
MAX_D = max(D_OPTIONS)
ROLES = ("q", "k", "v")
_F32_MAX = float(np.finfo(np.float32).max)


class UploadError(ValueError):
    """A file or array that cannot be used, with a message for the user."""


@dataclass(frozen=True)
class Uploaded:
    """Checked arrays, float32, with a head axis: q [Hq, Lq, D], k and v [Hkv, Lk, D]."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    sources: tuple[str, str, str]  # where q, k, v came from ("q.npy", "qkv.npz:k", ...)
    digest: str  # sha256 of the arrays as used (shapes and float32 bytes)

    @property
    def Hq(self) -> int:
        return self.q.shape[0]

    @property
    def Hkv(self) -> int:
        return self.k.shape[0]

    @property
    def Lq(self) -> int:
        return self.q.shape[1]

    @property
    def Lk(self) -> int:
        return self.k.shape[1]

    @property
    def D(self) -> int:
        return self.q.shape[2]

    def head(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q [Lq, D], k [Lk, D], v [Lk, D]) of query head h and the KV head it reads."""
        if not 0 <= h < self.Hq:
            raise ValueError(f"head must be in [0, {self.Hq - 1}], got {h}")
        hk = h // (self.Hq // self.Hkv)
        return self.q[h], self.k[hk], self.v[hk]

    def describe(self) -> str:
        return (f"q {list(self.q.shape)}, k {list(self.k.shape)}, v {list(self.v.shape)} "
                f"(sha256 {self.digest[:12]})")


# -- reading one .npy stream --------------------------------------------------------------------

def _header(fp, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header at fp; fp is left at the data."""
    try:
        version = np.lib.format.read_magic(fp)
    except ValueError as e:
        raise UploadError(f"{where} is not a NumPy .npy array (it does not start with the "
                          "\\x93NUMPY magic string); save arrays with np.save or np.savez. "
                          "Pickles and other formats are never loaded.") from e
    if version not in ((1, 0), (2, 0)):
        raise UploadError(f"{where} uses .npy format version {version[0]}.{version[1]}; "
                          "versions 1.0 and 2.0 are supported")
    size_fmt = "<H" if version == (1, 0) else "<I"
    raw = fp.read(struct.calcsize(size_fmt))
    if len(raw) != struct.calcsize(size_fmt):
        raise UploadError(f"{where} is truncated: it ends inside its header")
    (hlen,) = struct.unpack(size_fmt, raw)
    if hlen > MAX_HEADER:
        raise UploadError(f"{where} declares a header of {hlen} bytes; at most {MAX_HEADER} "
                          "are allowed (a real header is about a hundred)")
    fp.seek(-len(raw), io.SEEK_CUR)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read(fp, max_header_size=MAX_HEADER)
    except (ValueError, SyntaxError, EOFError) as e:
        raise UploadError(f"{where} has a malformed .npy header: {e}") from e
    return shape, fortran, dtype


def _check_header(shape, dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise UploadError(f"{where} holds Python objects (dtype {dtype}); they would need "
                          "pickle, which is never used. Save float arrays.")
    if dtype.kind == "c":
        raise UploadError(f"{where} is complex ({dtype}); attention inputs are real: "
                          "save float16, float32 or float64")
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise UploadError(f"{where} has dtype {dtype}; allowed are float16, float32 and "
                          "float64 (convert with x.astype(np.float32))")
    if len(shape) not in (2, 3):
        raise UploadError(f"{where} has shape {list(shape)}; expected [L, D] or [H, L, D]")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes > MAX_ARRAY_BYTES:
        raise UploadError(f"{where} declares {list(shape)} {dtype} = {nbytes / 2**20:.1f} MiB; "
                          f"at most {MAX_ARRAY_BYTES // 2**20} MiB per array")


def read_npy(fp, where: str) -> np.ndarray:
    """The array in a .npy stream, header checked before its data is read."""
    shape, _, dtype = _header(fp, where)
    _check_header(shape, dtype, where)
    fp.seek(0)
    try:
        return np.lib.format.read_array(fp, allow_pickle=False, max_header_size=MAX_HEADER)
    except (ValueError, EOFError, OSError) as e:
        raise UploadError(f"{where} is truncated or corrupt: {e}") from e


def _role(stem: str, where: str) -> str:
    role = stem.strip().lower()
    if role not in ROLES:
        raise UploadError(f"{where}: cannot tell whether it is q, k or v; name the files "
                          "q.npy, k.npy and v.npy, or the .npz members q, k and v "
                          "(np.savez(f, q=q, k=k, v=v))")
    return role


def _read_npz(data: bytes, name: str):
    """(role, where, array) for each member of an .npz archive."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise UploadError(f"{name} is not a valid .npz (zip) archive: {e}") from e
    with zf:
        members = zf.infolist()
        if len(members) > len(ROLES):
            raise UploadError(f"{name} holds {len(members)} arrays; expected q, k and v only")
        for info in members:
            where = f"{name}:{info.filename}"
            stem = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            role = _role(stem, where)
            if info.file_size > MAX_ARRAY_BYTES + MAX_HEADER + 16:
                raise UploadError(f"{where} unpacks to {info.file_size / 2**20:.1f} MiB; at "
                                  f"most {MAX_ARRAY_BYTES // 2**20} MiB per array")
            try:
                with zf.open(info) as fp:
                    member = io.BytesIO(fp.read(MAX_ARRAY_BYTES + MAX_HEADER + 16))
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as e:
                raise UploadError(f"{where} cannot be unpacked: {e}") from e
            yield role, where, read_npy(member, where)


def read_files(files) -> dict[str, tuple[str, np.ndarray]]:
    """role -> (where, array) from (name, bytes) pairs of .npy and .npz files."""
    found: dict[str, tuple[str, np.ndarray]] = {}
    for name, data in files:
        lower = name.lower()
        if lower.endswith(".npz"):
            items = list(_read_npz(data, name))
        elif lower.endswith(".npy"):
            role = _role(name.rsplit("/", 1)[-1][:-4], name)
            items = [(role, name, read_npy(io.BytesIO(data), name))]
        else:
            raise UploadError(f"{name}: only .npy and .npz files are read")
        for role, where, a in items:
            if role in found:
                raise UploadError(f"{role} is given twice: in {found[role][0]} and in {where}")
            found[role] = (where, a)
    missing = [r for r in ROLES if r not in found]
    if missing:
        raise UploadError(f"missing {', '.join(missing)}: upload q, k and v (q.npy, k.npy, "
                          "v.npy, or one .npz with members q, k, v)")
    return found


# -- checking the three arrays together ---------------------------------------------------------

def _finite(a: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UploadError(f"{where} has {int(bad.sum())} NaN/Inf value(s) (first at index "
                          f"{list(first)}) after conversion to float32 (|x| > 3.4e38 "
                          "overflows); attention inputs must be finite")


def check_arrays(found: dict[str, tuple[str, np.ndarray]]) -> Uploaded:
    """Uploaded from role -> (where, array): shapes agree, sizes traceable, values finite."""
    arrays = {}
    for role in ROLES:
        where, a = found[role]
        with np.errstate(over="ignore"):
            a = np.ascontiguousarray(a, dtype=np.float32)
        a = a[None] if a.ndim == 2 else a  # [H, L, D]
        _finite(a, where)
        H, L, D = a.shape
        if min(H, L, D) < 1:
            raise UploadError(f"{where} has shape {list(a.shape)}: every size must be >= 1")
        if H > MAX_H:
            raise UploadError(f"{where} has {H} heads; at most {MAX_H}")
        if L > MAX_TRACE_LEN:
            raise UploadError(f"{where} has L = {L} rows; the stepper traces at most "
                              f"{MAX_TRACE_LEN}")
        if D > MAX_D:
            raise UploadError(f"{where} has head dim D = {D}; at most {MAX_D}")
        arrays[role] = a
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    wq, wk, wv = (found[r][0] for r in ROLES)
    if k.shape != v.shape:
        raise UploadError(f"k ({wk}) and v ({wv}) must have the same shape, got "
                          f"{list(k.shape)} and {list(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise UploadError(f"head dim D differs: q ({wq}) has {q.shape[2]}, k ({wk}) has "
                          f"{k.shape[2]}")
    if q.shape[0] % k.shape[0]:
        raise UploadError(f"q has {q.shape[0]} heads and k, v have {k.shape[0]}: the query "
                          "heads must be a multiple of the KV heads (GQA groups)")
    if q.shape[1] > k.shape[1]:
        raise UploadError(f"q has Lq = {q.shape[1]} rows but k has only Lk = {k.shape[1]} "
                          "keys; the stepper needs Lq <= Lk (the queries are the last Lq "
                          "positions of the sequence)")
    # |score| <= |q| |k| / sqrt(D): refuse inputs whose scores could overflow float32
    bound = (np.linalg.norm(q.astype(np.float64), axis=2).max()
             * np.linalg.norm(k.astype(np.float64), axis=2).max() / math.sqrt(q.shape[2]))
    if not bound < 1e30:
        raise UploadError(f"|q| |k| / sqrt(D) reaches {bound:.3g}: scores could overflow "
                          "float32; rescale q or k")
    h = hashlib.sha256()
    for a in (q, k, v):
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return Uploaded(q, k, v, (wq, wk, wv), h.hexdigest())


def load(files) -> Uploaded:
    """Read and check (name, bytes) pairs; UploadError with a message for any problem."""
    return check_arrays(read_files(files))


def view_config(cfg: ViewConfig, up: Uploaded) -> tuple[ViewConfig, list[str]]:
    """The view of the uploaded arrays: their sizes, heads and D; the mask, blocks and
    alignment from ``cfg``, blocks raised if the grid needs it (with notices)."""
    if up.Lq == up.Lk:
        sizes = {"mode": "prefill", "L": up.Lq}
    elif up.Lq == 1:
        sizes = {"mode": "decode", "cache": up.Lk - 1}
    else:
        sizes = {"mode": "chunked", "chunk": up.Lq, "cache": up.Lk - up.Lq}
    D_near = min(D_OPTIONS, key=lambda d: abs(d - up.D))  # clamp knows the offered sizes only
    raw = {**cfg.__dict__, **sizes, "D": D_near, "B": 1, "Hq": up.Hq, "Hkv": up.Hkv}
    out, notices = clamp(raw)
    return replace(out, D=up.D), notices


def to_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive of named arrays (what the page's download gives back)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
