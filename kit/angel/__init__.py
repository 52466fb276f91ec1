"""Angel One: the SDK's workarounds, the wire format, sessions, instruments, candles, order updates."""
