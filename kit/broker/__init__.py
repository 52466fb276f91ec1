"""Orders out: the brokers, pre-trade risk, the order rules and the trading gate.

* ``base``: ``Broker``, the contract both brokers satisfy.
* ``paper``: ``PaperBroker``, fills from later ticks. ``live``: ``SmartApiBroker``, real orders through
  Angel One, built from ``order_state`` (live orders and their shared state), ``sender`` (the
  order-sender thread), ``reconcile`` (order book and positions) and ``timings``.
* ``book``: positions and P&L, shared by both brokers; the order types are ``kit.core.orders``.
* ``risk``, ``rules``, ``gate``: what may trade, what an order must look like, and the one switch.
* ``charges``: what a fill costs (brokerage, STT, exchange, SEBI, stamp duty, GST), from a versioned rate table.
"""
