"""DL/T 645-2007 (多功能电能表通信协议): cabinet energy meters on RS-485 or a transparent DTU.

``codec`` builds and checks frames (FE preamble, BCD address low byte first,
data +33H, sum checksum) and decodes values by their format; ``framer`` puts
them on a line that may also carry Modbus units; ``reader`` reads one data
identifier (with its follow-up frames); ``profile`` says which identifiers a
meter type is read for and plans a poll (blocks where the profile allows).
"""
