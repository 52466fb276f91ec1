"""Orders out: the paper and live brokers, pre-trade risk, the order rules, the trading gate."""
