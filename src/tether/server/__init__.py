"""The server: a framework-neutral core (sessions, PTYs, auth, metrics, logs, store) and its fronts.

The core imports no web framework; :mod:`tether.server.aiohttp_front` is the aiohttp front
(the only server module that imports aiohttp).
"""
