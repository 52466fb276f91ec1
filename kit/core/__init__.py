"""Domain types at the bottom of the kit: ticks, signals and strategies, the rate limiter."""
