"""DL/T 645-2007: the real frames of the protocol notes, and a meter read over TCP."""

from __future__ import annotations

import pytest

from drivers.dlt645 import codec


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_read_requests_are_built_byte_for_byte() -> None:
    energy = codec.read_request("000000000161", "00010000")
    assert energy == b"\xfe" * 4 + hexbytes("68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16")
    voltage = codec.read_request("000000000161", "02010100")
    assert voltage[4:] == hexbytes("68 61 01 00 00 00 00 68 11 04 33 34 34 35 17 16")
    rhilex = codec.read_request("100023669245", "02010100")
    assert rhilex[4:] == hexbytes("68 45 92 66 23 00 10 68 11 04 33 34 34 35 25 16")
    wildcard = codec.build("AAAAAAAAAAAA", codec.READ_ADDRESS, b"")
    assert wildcard == hexbytes("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16")


@pytest.mark.parametrize(
    ("reply", "address", "di", "fmt", "signed", "value"),
    [
        (
            "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16",
            "000000000161",
            "00010000",
            "XXXXXX.XX",
            False,
            0.26,
        ),
        (
            "68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16",
            "000000000161",
            "02010100",
            "XXX.X",
            False,
            100.1,
        ),
        (
            "68 61 01 00 00 00 00 68 91 07 33 33 36 35 45 58 33 6B 16",
            "000000000161",
            "02030000",
            "XX.XXXX",
            True,
            0.2512,
        ),
        (
            "FE FE 68 45 92 66 23 00 10 68 91 06 33 34 34 35 66 55 62 16",
            "100023669245",
            "02010100",
            "XXX.X",
            False,
            223.3,
        ),
    ],
)
def test_real_replies_decode_to_their_published_values(
    reply: str, address: str, di: str, fmt: str, signed: bool, value: float
) -> None:
    frame = codec.parse(hexbytes(reply))
    assert frame.address == address and frame.from_meter and not frame.abnormal
    size, decimals = codec.parse_format(fmt)
    data = codec.reply_value(frame, di)
    assert codec.decode_value(data[:size], decimals, signed) == pytest.approx(value)


def test_bad_frames_and_abnormal_replies_say_what_is_wrong() -> None:
    good = hexbytes("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16")
    with pytest.raises(codec.FrameError, match="checksum"):
        codec.parse(good[:-2] + b"\x11\x16")
    with pytest.raises(codec.FrameError, match="length"):
        codec.parse(good[:-3] + good[-2:])
    abnormal = codec.parse(codec.build("000000000161", 0xD1, b"\x02", preamble=False))
    assert abnormal.abnormal and abnormal.errors() == ["no requested data"]
    with pytest.raises(codec.FrameError, match="no requested data"):
        codec.reply_value(abnormal, "02010100")
    negative = codec.encode_value(-12.345, 3, 3, signed=True)
    assert codec.decode_value(negative, 3, signed=True) == -12.345
