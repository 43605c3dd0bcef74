"""Several nodes, one Redis: the node registry, leases and fencing (``docs/scaling.md``).

:mod:`~tether.server.cluster.lease` is the pure arithmetic (when to renew, when a node is lost,
the fencing rule); :mod:`~tether.server.cluster.registry` keeps it in Redis with the Lua scripts
of :mod:`~tether.server.cluster.scripts`. No web framework here: forwarding between nodes belongs
to the front.
"""

# Nothing is imported here on purpose: a server that joins no cluster never imports redis
# (tests/test_architecture.py checks it). Import from the modules themselves.
