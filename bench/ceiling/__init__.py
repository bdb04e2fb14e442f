"""Minimal relays speaking the PeerJS dialect, one per Python WebSocket stack.

They do what the PeerJS server does per message (parse JSON, fill in ``src``,
serialize, send to ``dst``) and nothing else: no auth, no schema, no rooms.
Run against PeerJS with the same workload (``python -m bench ceiling``), they
show the ceiling each stack puts on our server before any of our own code.
"""
