"""Stored raw messages to applied routes, a batch per transaction.

``parse_stage`` parses the next batch in worker processes while ``batches``
applies this one: route with the mailbox kind's rule table (``routing``), then
the domain's ``apply``. The domains are handed in by ``runtime.app``, so the
pipeline does not depend on any of them.

May import: ``routing``, ``mail``, ``store``, ``config``, ``clock``, ``errors``; never a domain.
"""
