"""Pure mail handling: bytes to ``InboundMail`` and back, quotes, signed reply addresses.

No database, no network, no clock of its own: everything here is a function of
its arguments, so it is tested on canned bytes.

May import: the stdlib's ``email``, ``lxml``/``inscriptis``, ``errors``, ``units``; nothing that stores or sends.
"""
