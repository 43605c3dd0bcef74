"""Compatibility path: a re-export of the module that now lives in the layer named below."""
# moved, kept because the docs name this import path

from tether.protocol.policy import (
    FAILURES_TO_OPEN as FAILURES_TO_OPEN,
)
from tether.protocol.policy import (
    MAX_BACKOFF as MAX_BACKOFF,
)
from tether.protocol.policy import (
    OPEN_SECONDS as OPEN_SECONDS,
)
from tether.protocol.policy import (
    Listener as Listener,
)
from tether.protocol.policy import (
    PolicyError as PolicyError,
)
from tether.protocol.policy import (
    PolicyEvent as PolicyEvent,
)
from tether.protocol.policy import (
    ReconnectPolicy as ReconnectPolicy,
)
from tether.protocol.policy import (
    State as State,
)
from tether.protocol.policy import (
    backoff_delay as backoff_delay,
)
