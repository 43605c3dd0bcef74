"""Compatibility path: a re-export of the module that now lives in the layer named below."""
# moved, kept because the docs name this import path

from tether.tools.embedded import (
    SHELL as SHELL,
)
from tether.tools.embedded import (
    EmbeddedServer as EmbeddedServer,
)
