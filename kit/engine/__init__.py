"""The trader: one tick's path from feed to broker, its metrics, and process tuning while trading."""
