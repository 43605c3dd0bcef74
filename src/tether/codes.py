"""Compatibility path: a re-export of the module that now lives in the layer named below."""
# moved, kept because the docs name this import path

from tether.protocol.codes import (
    MAX_REASON_BYTES as MAX_REASON_BYTES,
)
from tether.protocol.codes import (
    Action as Action,
)
from tether.protocol.codes import (
    CloseCode as CloseCode,
)
from tether.protocol.codes import (
    action_for as action_for,
)
from tether.protocol.codes import (
    clip_reason as clip_reason,
)
from tether.protocol.codes import (
    is_stop_code as is_stop_code,
)
from tether.protocol.codes import (
    retry_after_seconds as retry_after_seconds,
)
