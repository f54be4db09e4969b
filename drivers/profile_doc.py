"""Render device profiles as register tables a hardware vendor can check.

``python -m drivers.profile_doc > docs/profiles.md`` regenerates the document;
a test fails when the document and the profiles disagree.
"""

from __future__ import annotations

import sys

from drivers.profile import DeviceProfile, ProfileLibrary, Table

_TABLE_NAMES = {
    Table.COIL: "coil (0x)",
    Table.DISCRETE_INPUT: "discrete input (1x)",
    Table.INPUT_REGISTER: "input register (3x)",
    Table.HOLDING_REGISTER: "holding register (4x)",
}
_FUNCTIONS = {
    Table.COIL: "read 01, write 05/15",
    Table.DISCRETE_INPUT: "read 02",
    Table.INPUT_REGISTER: "read 04",
    Table.HOLDING_REGISTER: "read 03, write 06/16",
}


def _order(profile_point_type_words: int, word: str, byte: str) -> str:
    if profile_point_type_words == 1:
        return "AB" if byte == "big" else "BA"
    return {
        ("big", "big"): "ABCD",
        ("little", "big"): "CDAB",
        ("big", "little"): "BADC",
        ("little", "little"): "DCBA",
    }[word, byte]


def render_profile(profile: DeviceProfile, library: ProfileLibrary) -> str:
    """One profile as a Markdown section with its register table."""
    lines = [
        f"## {profile.name} ({profile.device_class})",
        "",
        profile.description,
        "",
        f"Largest read: {profile.max_registers_per_read} registers; the controller reads "
        f"through gaps of up to {profile.max_gap} unused registers.",
        "",
        "| point | table | address | type | order | scale | offset | unit | access | notes |",
        "|---|---|---:|---|---|---:|---:|---|---|---|",
    ]
    for p in profile.points:
        order = "" if p.type.value == "bool" else _order(p.type.words, p.word_order, p.byte_order)
        notes = p.description
        if p.invalid_raw is not None:
            notes += f" (raw {p.invalid_raw} = invalid)"
        lines.append(
            f"| {p.name} | {_TABLE_NAMES[p.table]} | {p.address} | {p.type.value} | {order} | "
            f"{p.scale:g} | {p.offset:g} | {p.unit} | {p.access} | {notes} |"
        )
    for block in profile.blocks:
        inner = library[block.profile]
        lines += [
            "",
            f"Repeated block `{block.name}`: up to {block.count_max} `{inner.name}` devices. "
            f"The device in slot i (0-based) has the `{inner.name}` points at:",
            "",
        ]
        for table, base in block.base.items():
            lines.append(
                f"- {_TABLE_NAMES[table]}: {base} + i x {block.stride[table]} + point address"
            )
    for kind in ("circuit", "switch", "dim"):
        spec = getattr(profile.controls, kind)
        if spec is not None:
            lines.append("")
            lines.append(
                f"Control `{kind}`: write `{spec.command}`, confirmed when `{spec.feedback}` "
                "reads the commanded value"
                + (" (`{n}` = circuit number)." if kind == "circuit" else ".")
            )
    if profile.time_table is not None:
        tt = profile.time_table
        lines += [
            "",
            f"Time-control table: {tt.entries} entries of 4 holding registers from {tt.base}: "
            "minute of day (local), circuit bitmask, state 0/1, dim %; an unused entry "
            "starts with 65535.",
        ]
    lines += [
        "",
        "Function codes: "
        + "; ".join(
            f"{_TABLE_NAMES[t]} {_FUNCTIONS[t]}"
            for t in Table
            if any(p.table is t for p in profile.points)
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def render_all(library: ProfileLibrary) -> str:
    """The whole document for every shipped profile."""
    header = [
        "# Device profiles: register tables",
        "",
        "Generated from `drivers/profiles/*.yaml` by `python -m drivers.profile_doc`;",
        "do not edit by hand. Addresses are 0-based protocol addresses (the number sent",
        "on the wire), not 1-based 4xxxx reference numbers. Value = raw x scale + offset.",
        "Orders: ABCD is high word first, big-endian bytes; CDAB low word first.",
        "",
    ]
    sections = [render_profile(library[name], library) for name in library.names()]
    return "\n".join(header) + "\n" + "\n".join(sections)


def main() -> int:
    """Print the document to standard output."""
    sys.stdout.write(render_all(ProfileLibrary.load()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
