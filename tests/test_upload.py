"""Your own Q, K, V: hostile and wrong files get a clear UploadError (never a traceback, never
a pickle loaded, never a large read before the size is known); good files load, pick heads
with GQA, give a view configuration, and trace exactly."""
from __future__ import annotations

import io
import pickle
import struct
import zipfile

import numpy as np
import pytest

from attnviz import run_trace, upload
from attnviz.upload import UploadError
from attnviz.viewconfig import DEFAULT
from tests.helpers import rel_err


def npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def npz(**arrays) -> bytes:
    return upload.to_npz(arrays)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def good(Lq=20, Lk=30, D=8, Hq=None, Hkv=None):
    qs = (Hq, Lq, D) if Hq else (Lq, D)
    ks = (Hkv, Lk, D) if Hkv else (Lk, D)
    return [("q.npy", npy(rand(*qs, seed=1))), ("k.npy", npy(rand(*ks, seed=2))),
            ("v.npy", npy(rand(*ks, seed=3)))]


def refused(files, match):
    with pytest.raises(UploadError, match=match):
        upload.load(files)


def replace(files, name, data):
    return [(n, data if n == name else d) for n, d in files]


# --- hostile files -------------------------------------------------------------------------------

class Boom:
    def __reduce__(self):  # would run on unpickling
        return (exec, ("raise SystemExit('pickle executed')",))


def test_a_pickle_is_never_loaded():
    refused(replace(good(), "q.npy", pickle.dumps(Boom())),
            r"q.npy is not a NumPy .npy array .*Pickles and other formats are never loaded")


def test_an_object_array_is_refused_from_its_header():
    obj = np.array([[Boom(), 1]], dtype=object)
    refused(replace(good(), "k.npy", npy(obj)), r"k.npy holds Python objects \(dtype object\)")


def test_a_huge_header_is_refused_before_it_is_read():
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{'descr': '<f4'"
    refused(replace(good(), "q.npy", data), r"declares a header of 2147483648 bytes; at most 10000")


def test_a_huge_shape_is_refused_before_any_data_is_read():
    header = {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)  # a header and no data at all
    refused(replace(good(), "v.npy", buf.getvalue()),
            r"v.npy declares \[100000, 100000\] float32 = 38147.0 MiB; at most 64 MiB")


def test_a_zip_bomb_member_is_refused_from_its_declared_size():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("q.npy", npy(np.zeros((4096, 4096 + 256), np.float32)))
    assert len(buf.getvalue()) < 1_000_000
    refused([("qkv.npz", buf.getvalue()), *good()[1:]],
            r"qkv.npz:q.npy unpacks to 68.0 MiB; at most 64 MiB")


def test_a_truncated_file_says_so():
    data = npy(rand(20, 8))
    refused(replace(good(), "q.npy", data[:-10]), r"q.npy is truncated or corrupt")


def test_not_a_zip_and_other_extensions():
    refused([("qkv.npz", b"not a zip at all")], r"qkv.npz is not a valid .npz \(zip\) archive")
    refused([("q.txt", b"1 2 3")], r"q.txt: only .npy and .npz files are read")


# --- wrong arrays --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 4)])
def test_wrong_rank(shape):
    refused(replace(good(), "q.npy", npy(rand(*shape))),
            rf"q.npy has shape \[{', '.join(map(str, shape))}\]; expected \[L, D\] or \[H, L, D\]")


@pytest.mark.parametrize("dtype,match", [
    (np.complex64, r"k.npy is complex \(complex64\)"),
    (np.int32, r"k.npy has dtype int32; allowed are float16, float32 and float64"),
    (np.bool_, r"k.npy has dtype bool"),
    ("U3", r"k.npy has dtype <U3"),
])
def test_wrong_dtypes(dtype, match):
    refused(replace(good(), "k.npy", npy(np.zeros((30, 8), dtype))), match)


def test_nan_inf_and_float32_overflow():
    a = rand(30, 8)
    a[7, 3] = np.nan
    refused(replace(good(), "v.npy", npy(a)),
            r"v.npy has 1 NaN/Inf value\(s\) \(first at index \[0, 7, 3\]\)")
    b = rand(30, 8).astype(np.float64)
    b[2, 2] = 1e300  # finite in float64, inf in float32
    refused(replace(good(), "k.npy", npy(b)), r"k.npy has 1 NaN/Inf value")
    c = rand(20, 8) * np.float32(1e35)  # finite, but q.k reaches float32's max
    refused(replace(good(), "q.npy", npy(c)), r"scores could overflow float32")


def test_shapes_that_do_not_fit_together():
    refused(good(Hq=3, Hkv=2), r"q has 3 heads and k, v have 2: .* multiple of the KV heads")
    refused(replace(good(), "v.npy", npy(rand(31, 8))), r"k \(k.npy\) and v \(v.npy\) must have the same shape")
    refused(replace(good(), "q.npy", npy(rand(20, 9))), r"head dim D differs: q \(q.npy\) has 9, k \(k.npy\) has 8")
    refused(good(Lq=40, Lk=30), r"q has Lq = 40 rows but k has only Lk = 30 keys")
    refused(replace(good(), "q.npy", npy(rand(20, 300))), r"head dim D = 300; at most 256")
    refused(replace(good(), "q.npy", npy(rand(0, 8))), r"every size must be >= 1")


def test_names_missing_and_twice():
    refused(good()[:2], r"missing v: upload q, k and v")
    refused([("qkv.npz", npz(arr_0=rand(3, 2)))], r"qkv.npz:arr_0.npy: cannot tell whether it is q, k or v")
    refused([("qkv.npz", npz(q=rand(20, 8), k=rand(30, 8), v=rand(30, 8))), good()[0]],
            r"q is given twice: in qkv.npz:q.npy and in q.npy")
    with pytest.raises(UploadError, match="cannot tell"):
        upload.load([("x.npy", npy(rand(3, 2)))])


# --- good files ----------------------------------------------------------------------------------

def test_an_npz_with_heads_loads_and_picks_gqa_heads():
    q, k, v = rand(4, 25, 16, seed=1), rand(2, 40, 16, seed=2), rand(2, 40, 16, seed=3)
    up = upload.load([("mine.npz", npz(q=q, k=k.astype(np.float16), v=v.astype(np.float64)))])
    assert (up.Hq, up.Hkv, up.Lq, up.Lk, up.D) == (4, 2, 25, 40, 16)
    assert up.sources == ("mine.npz:q.npy", "mine.npz:k.npy", "mine.npz:v.npy")
    qh, kh, vh = up.head(3)  # query head 3 reads KV head 3 // 2 = 1
    np.testing.assert_array_equal(qh, q[3])
    np.testing.assert_array_equal(kh, k[1].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(vh, v[1])
    with pytest.raises(ValueError, match=r"head must be in \[0, 3\], got 4"):
        up.head(4)
    again = upload.load([("q.npy", npy(q)), ("other.npz", npz(k=k.astype(np.float16), v=v))])
    assert again.digest == up.digest  # the content decides, not the file names
    assert upload.load(good()).digest != up.digest
    cfg, notices = upload.view_config(DEFAULT, up)
    assert (cfg.mode, cfg.Lq, cfg.Lk, cfg.D, cfg.B, cfg.Hq, cfg.Hkv) == ("chunked", 25, 40, 16, 1, 4, 2)
    assert notices == []


@pytest.mark.parametrize("Lq,Lk,mode", [(30, 30, "prefill"), (1, 30, "decode"), (1, 1, "prefill")])
def test_view_config_mode_follows_the_shapes(Lq, Lk, mode):
    cfg, _ = upload.view_config(DEFAULT, upload.load(good(Lq=Lq, Lk=Lk, D=24)))
    assert (cfg.mode, cfg.Lq, cfg.Lk, cfg.D) == (mode, Lq, Lk, 24)  # D need not be offered


def test_view_config_raises_blocks_for_long_uploads_with_a_notice():
    cfg, notices = upload.view_config(DEFAULT, upload.load(good(Lq=3000, Lk=3000, D=4)))
    assert cfg.Tr <= 128 and cfg.Tc <= 128 and cfg.Tr * cfg.Tc <= 8192
    assert any(n.startswith("Br=16 for Lq=3000 is too small") for n in notices)


def test_uploaded_heads_trace_exactly():
    up = upload.load(good(Lq=33, Lk=70, D=16, Hq=2, Hkv=1))
    q, k, v = up.head(1)
    t = run_trace(q, k, v, q_block=8, kv_block=16)
    from attnviz.reference import attention_reference
    O, lse = attention_reference(q, k, v)
    assert rel_err(t.out, O) < 1e-5 and rel_err(t.lse, lse) < 1e-5
