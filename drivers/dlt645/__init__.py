"""DL/T 645-2007 (多功能电能表通信协议): cabinet energy meters on RS-485 or a transparent DTU.

``codec`` builds and checks frames (FE preamble, BCD address low byte first,
data +33H, sum checksum) and decodes values by their format; ``client`` reads
data identifiers from a meter over a byte stream, one transaction at a time.
Not yet wired into the poller (see docs/dlt645.md).
"""
