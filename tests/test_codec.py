"""Codec: known register vectors, round trips, and the vector path against the scalar one."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from drivers.modbus.codec import FieldTable, decode_fields, decode_value, encode_value
from drivers.profile import DataType, Order, PointSpec, Table


def point(
    type_: str,
    word: str = "big",
    byte: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
    table: Table = Table.HOLDING_REGISTER,
) -> PointSpec:
    return PointSpec(
        name="p",
        table=table,
        address=0,
        type=DataType(type_),
        word_order=Order(word),
        byte_order=Order(byte),
        scale=scale,
        offset=offset,
    )


@pytest.mark.parametrize(
    ("spec", "value", "words"),
    [
        (point("u16"), 4660, [0x1234]),
        (point("i16"), -2, [0xFFFE]),
        (point("u32"), 0x12345678, [0x1234, 0x5678]),
        (point("u32", word="little"), 0x12345678, [0x5678, 0x1234]),  # CDAB
        (point("u32", byte="little"), 0x12345678, [0x3412, 0x7856]),  # BADC
        (point("u32", word="little", byte="little"), 0x12345678, [0x7856, 0x3412]),  # DCBA
        (point("i32"), -1, [0xFFFF, 0xFFFF]),
        (point("f32"), 1.0, [0x3F80, 0x0000]),
        (point("f32", word="little"), -2.5, [0x0000, 0xC020]),
        (point("u16", scale=0.1), 230.4, [2304]),
        (point("i16", scale=0.1, offset=-40.0), -12.5, [275]),
        (point("bool", table=Table.COIL), True, [1]),
    ],
)
def test_encode_matches_hand_computed_registers(
    spec: PointSpec, value: float, words: list[int]
) -> None:
    assert encode_value(spec, value) == words
    assert decode_value(spec, words) == pytest.approx(float(value), abs=spec.scale / 2)


def test_energy_meter_cdab_vector_from_struct() -> None:
    spec = point("u32", word="little", scale=0.1)
    raw = struct.pack(">I", 1234567)
    hi, lo = int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")
    assert encode_value(spec, 123456.7) == [lo, hi]


def test_out_of_range_value_is_refused() -> None:
    with pytest.raises(ValueError, match="outside u16"):
        encode_value(point("u16"), 70000)


def test_vector_decode_equals_scalar_decode_on_random_registers() -> None:
    rng = np.random.default_rng(42)
    specs = []
    for type_ in ("u16", "i16", "u32", "i32", "f32"):
        for word in ("big", "little"):
            for byte in ("big", "little"):
                specs.append(
                    point(
                        type_,
                        word,
                        byte,
                        scale=float(rng.choice([1, 0.1, 0.01])),
                        offset=float(rng.choice([0, -40])),
                    )
                )
    for _ in range(20):
        buffer = rng.integers(0, 0x10000, size=2 * len(specs), dtype=np.uint16)
        index = [2 * i for i in range(len(specs))]
        values, valid = decode_fields(buffer, FieldTable.build(specs, index))
        for i, spec in enumerate(specs):
            expected = decode_value(spec, buffer[2 * i : 2 * i + 2].tolist())
            if np.isfinite(expected):
                assert values[i] == pytest.approx(expected, rel=1e-12, abs=1e-12)
                assert valid[i]
            else:
                assert not valid[i]


def test_invalid_marker_flags_reading() -> None:
    spec = PointSpec(name="status", table=Table.HOLDING_REGISTER, address=0, invalid_raw=0xFFFF)
    values, valid = decode_fields(
        np.array([0xFFFF, 3], dtype=np.uint16), FieldTable.build([spec, spec], [0, 1])
    )
    assert list(valid) == [False, True]
    assert values[1] == 3


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("ABCD", [0x1234, 0x5678]),
        ("CDAB", [0x5678, 0x1234]),
        ("BADC", [0x3412, 0x7856]),
        ("DCBA", [0x7856, 0x3412]),
    ],
)
def test_a_byte_layout_by_its_usual_name(name: str, words: list[int]) -> None:
    spec = PointSpec.model_validate(
        {"name": "p", "table": "holding_register", "address": 0, "type": "u32", "order": name}
    )
    assert encode_value(spec, 0x12345678) == words
    assert decode_value(spec, words) == 0x12345678


def test_a_named_layout_that_contradicts_the_orders_is_refused() -> None:
    with pytest.raises(ValueError, match="order CDAB means word_order little, not big"):
        PointSpec.model_validate(
            {
                "name": "p",
                "table": "holding_register",
                "address": 0,
                "type": "u32",
                "order": "CDAB",
                "word_order": "big",
            }
        )
    with pytest.raises(ValueError, match="ABCD"):
        PointSpec.model_validate(
            {"name": "p", "table": "holding_register", "address": 0, "order": "ACBD"}
        )
