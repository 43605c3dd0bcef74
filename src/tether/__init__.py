"""tether: persistent browser terminals — real shells in real PTYs that survive every disconnect."""

__version__ = "0.1.0"
