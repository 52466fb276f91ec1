"""Backtests over recordings, charts, example strategies, and export to a script."""
