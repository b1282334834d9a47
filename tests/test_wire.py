import numpy as np
import pytest

from distgfn.wire import WireError, decode, encode


def test_round_trip_of_nested_arrays_and_scalars():
    msg = {"version": 7, "id": "a-1", "batch": {"x": np.arange(12, dtype=np.int8).reshape(3, 4),
                                                "m": np.array([True, False]), "r": np.float32(1.5),
                                                "empty": np.zeros((0, 3), np.float64)}}
    out = decode(encode(msg))
    assert out["version"] == 7 and out["id"] == "a-1" and out["batch"]["r"] == 1.5
    for k in ("x", "m", "empty"):
        assert out["batch"][k].dtype == msg["batch"][k].dtype
        np.testing.assert_array_equal(out["batch"][k], msg["batch"][k])


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="dtype object"):
        encode({"x": np.array([{}], dtype=object)})


def test_truncated_bytes_give_a_clear_error():
    data = encode({"x": np.arange(100)})
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(WireError, match="cannot decode|needs|bad array"):
            decode(data[:cut])


def test_random_bytes_never_crash():
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = rng.bytes(int(rng.integers(1, 200)))
        try:
            decode(data)
        except WireError:
            pass


@pytest.mark.parametrize("header", [[["<i8"], [2]], ["|O", [1]], ["<i8", [-1]], ["<i8", "2"], ["<i8"], 7])
def test_malicious_array_headers_are_rejected(header):
    import msgpack

    head = msgpack.packb(header)
    data = msgpack.packb(msgpack.ExtType(1, bytes([len(head)]) + head + bytes(16)))
    with pytest.raises(WireError, match="bad array header"):
        decode(data)


def test_a_shape_whose_size_overflows_int64_is_rejected():
    import msgpack

    head = msgpack.packb(["<i8", [2**62, 4]])  # 2**64 elements: int64 arithmetic would say 0 bytes
    with pytest.raises(WireError, match="needs"):
        decode(msgpack.packb(msgpack.ExtType(1, bytes([len(head)]) + head)))


def test_repeated_headers_decode_alike_and_a_bad_one_stays_bad():
    arrays = [np.arange(n, dtype=np.int16) for n in (3, 3, 5)]
    for a in arrays * 2:
        np.testing.assert_array_equal(decode(encode(a)), a)
    import msgpack

    head = msgpack.packb(["|O", [1]])
    data = msgpack.packb(msgpack.ExtType(1, bytes([len(head)]) + head + bytes(8)))
    for _ in range(2):
        with pytest.raises(WireError, match="bad array header"):
            decode(data)
