"""The wire format: msgpack, with numpy arrays as an extension type. Nothing is ever unpickled.

    data = encode({"batch": {"feats": np.zeros((3, 4), np.int8)}, "version": 7})
    decode(data)["batch"]["feats"].shape == (3, 4)

Bytes that are truncated, corrupt or name a non-numeric dtype raise `WireError`.
"""

from __future__ import annotations

import msgpack
import numpy as np

NDARRAY = 1
# Plain numeric dtypes only: an object dtype would let bytes choose what gets constructed.
DTYPES = {np.dtype(t).str for t in (bool, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                    np.uint32, np.uint64, np.float16, np.float32, np.float64)}


class WireError(ValueError):
    """Bytes that do not decode to a valid message."""


def encode(obj) -> bytes:
    return msgpack.packb(obj, default=_pack_array, use_bin_type=True)


def decode(data: bytes):
    try:
        return msgpack.unpackb(data, ext_hook=_unpack_array, raw=False, strict_map_key=False)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"cannot decode {len(data)} bytes: {type(e).__name__}: {e}") from None


def _pack_array(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"cannot encode {type(obj).__name__}")
    if obj.dtype.str not in DTYPES:
        raise TypeError(f"cannot encode arrays of dtype {obj.dtype}")
    header = msgpack.packb([obj.dtype.str, list(obj.shape)])
    # Payload: header length (1 byte), msgpack header [dtype, shape], raw little-endian data.
    return msgpack.ExtType(NDARRAY, bytes([len(header)]) + header + np.ascontiguousarray(obj).tobytes())


def _unpack_array(code: int, payload: bytes):
    if code != NDARRAY:
        raise WireError(f"unknown extension type {code}")
    end = 1 + payload[0] if payload else 0
    try:
        dtype, shape = msgpack.unpackb(payload[1:end], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"bad array header: {e}") from None
    if not isinstance(dtype, str) or dtype not in DTYPES or not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"bad array header {dtype!r} {shape!r}")
    dtype = np.dtype(dtype)
    size = dtype.itemsize * int(np.prod(shape))
    if len(payload) - end != size:
        raise WireError(f"array of {dtype} {tuple(shape)} needs {size} bytes, got {len(payload) - end}")
    return np.frombuffer(payload, dtype=dtype, offset=end).reshape(shape)
