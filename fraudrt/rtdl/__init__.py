"""Real-time decision loop plane: archive, identity/features/context projection, decisions."""
