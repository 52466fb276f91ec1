"""The embedded simulator: Angel One's wire protocol, REST and order updates on 127.0.0.1.

A test double and the offline default; product code reaches it only through the engine's venues."""
