"""Privacy at send time: what of an entity may leave, as it is now.

The capture triggers decide privacy when a change is captured; the entity may
have become stricter since. So the uploader asks again for every row it
claims (the ``claim_due`` query reads each entity's level now, a message's
being the stricter of its own and its chat's). LOCAL_ONLY is withheld (the
caller supersedes the row), REDACTED goes without content.
"""

from __future__ import annotations

LEVELS = ("FULL", "REDACTED", "LOCAL_ONLY")
"""From the least strict to the strictest."""


def at_level(entity_type: str, payload: str, level: str) -> str:
    """``payload`` as it may travel at ``level`` (not LOCAL_ONLY: that is withheld)."""
    if level != "REDACTED":
        return payload
    import json  # here: `acode chat add` reads LEVELS and sends nothing

    data = json.loads(payload)
    if data.get("content") is None and data.get("privacy") == "REDACTED":
        return payload
    data["privacy"] = "REDACTED"
    if entity_type == "message":
        data["content"] = None
    return json.dumps(data)
