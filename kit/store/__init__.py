"""What is kept on disk: the trading journal and tick recordings."""
