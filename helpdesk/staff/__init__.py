"""Staff working by email: the commands in a reply (pure parse) and acting on them.

``commands`` parses ``#close``, ``#assign me``, ``#note``... into a plan
without touching anything; ``act`` checks it against the ticket and applies it.

May import: ``tickets``, ``routing``, ``outbound``, ``store``, ``mail``, ``config``, ``units``, ``clock``,
``errors``.
"""
