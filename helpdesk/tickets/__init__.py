"""The tickets domain: the support mailbox's rule table, applying routes, lifecycle, deadlines.

``route`` decides (pure), ``inbox`` turns a decision into the call that writes
it, ``desk`` writes a ticket and the mail it causes in one transaction,
``lifecycle`` says which timers a ticket event sets, ``deadlines`` what a
ticket timer means when it fires.

May import: ``routing``, ``outbound``, ``store``, ``mail``, ``config``, ``units``, ``clock``, ``errors``,
and the pure ``disputes.rules``; not ``staff`` or ``disputes`` otherwise (they build on tickets).
"""
