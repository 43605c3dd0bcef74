"""Compatibility path: a re-export of the module that now lives in the layer named below."""
# moved, kept because the docs name this import path

from tether.client.events import (
    ClientEvent as ClientEvent,
)
from tether.client.events import (
    Connected as Connected,
)
from tether.client.events import (
    Disconnected as Disconnected,
)
from tether.client.events import (
    EventListener as EventListener,
)
from tether.client.events import (
    Exited as Exited,
)
from tether.client.events import (
    Gap as Gap,
)
from tether.client.events import (
    Latency as Latency,
)
from tether.client.events import (
    Resized as Resized,
)
from tether.client.events import (
    ServerError as ServerError,
)
