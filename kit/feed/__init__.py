"""Ticks in: the live socket feed, replays of recordings, and the dispatch modes."""
