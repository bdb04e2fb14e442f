"""Abuse limits (docs/security.md), each named for what it counts.

- :mod:`.token_bucket`: the token bucket, one per connection for client
  frames, and :class:`~.token_bucket.TokenBuckets`, a bounded map of them;
- :mod:`.handshakes`: WebSocket handshakes per client address, per instance;
- :mod:`.connections`: concurrent connections per user, across instances;
- :mod:`.login`: password attempts per address and per username, across
  instances;
- :mod:`.admission`: the limits a WebSocket meets before it is accepted.

With Redis they use the one client of :mod:`second_brain_database.redis_clients`;
each Redis operation here touches one key, so all of them run on a Cluster.
"""
