"""Compatibility path: a re-export of the module that now lives in the layer named below."""
# moved, kept because the docs name this import path

from tether.tools.proxy import (
    ProxyStatistics as ProxyStatistics,
)
from tether.tools.proxy import (
    TcpProxy as TcpProxy,
)
