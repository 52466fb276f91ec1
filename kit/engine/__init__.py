"""The trader: its config, the venue that owns its connection, one tick's path from feed to broker, the
live controls, status, metrics, and process tuning while trading."""
