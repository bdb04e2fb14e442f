"""Calls: ringing a user on every device (docs/protocol.md, "Calls").

- :mod:`.model`: a call, how it ended, where its caller hears back;
- :mod:`.rules`: what a ``call`` may ask, decided without I/O;
- :mod:`.store`: where calls live (:mod:`.memory_calls`, :mod:`.redis_calls`),
  whose one atomic transition ``ringing -> ended`` decides every race;
- :mod:`.frames`: the frames calls send;
- :mod:`.service`: starts, answers, cancels and times out calls, and rings
  the user sockets of this process;
- :mod:`.user_session` and :mod:`.user_sockets`: the ``/ws/user`` socket,
  sans I/O and its driver.
"""
