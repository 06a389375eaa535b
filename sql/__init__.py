"""SQL shipped with acode-sync: sqlite/ (local capture) and postgres/ (server)."""
