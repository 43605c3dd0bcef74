"""Operator tools built on the client: check, load, stress, the loopback proxy, an embedded server.

They report values; printing belongs to :mod:`tether.cli`.
"""
