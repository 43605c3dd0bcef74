"""The sans-I/O protocol: pure values and state machines, no sockets, no clock, no asyncio.

Close codes, session ids, the output ring, the terminal mode tracker, the storm detector, the
reconnection policy and the typed messages of both directions live here. Nothing in this package
imports the server, the client or the tools (an import-linter contract checks it in CI).
"""
