"""The agent message bus: typed messages, per-agent inboxes, presence and broadcasts."""

from ..storage import Priority
from ._bus import (
    HANDOVER_SWEEP_S,
    MAX_BATCH,
    AgentBus,
    Broadcast,
)
from ._handover import Handover, HandoverState
from ._inbox import Inbox
from ._message import (
    AGENT_NAME_RULE,
    MAX_PAYLOAD_BYTES,
    MAX_TTL_S,
    PRIORITY_NAMES,
    TYPE_NAMES,
    AgentMessage,
    MessageType,
    Outgoing,
    agent_name,
    outgoing,
    parse_outgoing,
)

__all__ = [
    "AGENT_NAME_RULE",
    "HANDOVER_SWEEP_S",
    "MAX_BATCH",
    "MAX_PAYLOAD_BYTES",
    "MAX_TTL_S",
    "PRIORITY_NAMES",
    "TYPE_NAMES",
    "AgentBus",
    "AgentMessage",
    "Broadcast",
    "Handover",
    "HandoverState",
    "Inbox",
    "MessageType",
    "Outgoing",
    "Priority",
    "agent_name",
    "outgoing",
    "parse_outgoing",
]
