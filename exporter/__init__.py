"""FlakeDrop Telemetry: receives FlakeDrop's opt-in usage events and serves them as metrics and stats."""

__version__ = "0.1.0"
