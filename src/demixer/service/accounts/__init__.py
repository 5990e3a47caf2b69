"""Who may do what, and how much: API keys, per-key limits, usage and stored bytes."""
