"""The wire format: msgpack, with numpy arrays as an extension type. Nothing is ever unpickled.

    data = encode({"batch": {"feats": np.zeros((3, 4), np.int8)}, "version": 7})
    decode(data)["batch"]["feats"].shape == (3, 4)

Bytes that are truncated, corrupt or name a non-numeric dtype raise `WireError`.
"""

from __future__ import annotations

import math

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
    # Payload: header length (1 byte), msgpack header [dtype, shape], raw little-endian data.
    return msgpack.ExtType(NDARRAY, _header_bytes(obj.dtype, obj.shape) + np.ascontiguousarray(obj).tobytes())


def _header_bytes(dtype: np.dtype, shape: tuple) -> bytes:
    key = (dtype.str, shape)
    header = _PACKED.get(key)
    if header is None:
        if dtype.str not in DTYPES:
            raise TypeError(f"cannot encode arrays of dtype {dtype}")
        packed = msgpack.packb([dtype.str, list(shape)])
        header = _remember(_PACKED, key, bytes([len(packed)]) + packed)
    return header


def _unpack_array(code: int, payload: bytes):
    if code != NDARRAY:
        raise WireError(f"unknown extension type {code}")
    end = 1 + payload[0] if payload else 0
    dtype, shape, size = _read_header(payload[1:end])
    if len(payload) - end != size:
        raise WireError(f"array of {dtype} {shape} needs {size} bytes, got {len(payload) - end}")
    return np.frombuffer(payload, dtype=dtype, offset=end).reshape(shape)


def _read_header(header: bytes) -> tuple[np.dtype, tuple, int]:
    """(dtype, shape, data bytes) of a checked array header."""
    parsed = _PARSED.get(header)
    if parsed is None:
        try:
            dtype, shape = msgpack.unpackb(header, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise WireError(f"bad array header: {e}") from None
        if not isinstance(dtype, str) or dtype not in DTYPES or not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise WireError(f"bad array header {dtype!r} {shape!r}")
        dtype = np.dtype(dtype)
        parsed = _remember(_PARSED, header, (dtype, tuple(shape), dtype.itemsize * math.prod(shape)))
    return parsed


# Array headers repeat (records of one run share dtypes and most shapes): each distinct one
# is built or checked once. Bounded; plain dict operations, safe across threads.
_PACKED: dict = {}
_PARSED: dict = {}


def _remember(cache: dict, key, value):
    if len(cache) >= 4096:
        cache.clear()
    cache[key] = value
    return value
