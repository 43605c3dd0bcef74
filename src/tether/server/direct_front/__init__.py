"""The direct front: ``/ws/terminal`` served on the socket, without a web framework.

The listening site (:mod:`tether.server.aiohttp_front.site`) gives it the connections whose
first request is a well-formed WebSocket upgrade of ``/ws/terminal`` (on a server with no
cluster); every other request stays aiohttp's. :mod:`.handshake` reads the head and writes the
101 (sans I/O); :mod:`.connection` is the :class:`~tether.server.front.Front` of one client, a
transport's protocol with ``websockets``' sans-I/O frames and no task of its own
(docs/architecture.md, docs/benchmarks.md "One node at its limits").
"""
