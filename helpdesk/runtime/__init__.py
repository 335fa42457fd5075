"""Running the helpdesk: the composition root, the service loop, the scheduler, the tick, ingest.

``app`` is the only place that reads the config and decides which database,
transport and clock to use; ``service`` runs the sources, the pipeline, the
outbox and the scheduler together; ``tick`` fires due timers and hands each to
the domain whose subject it is. The one importer of ``schedule``.

May import: everything below it — ``config``, ``mail``, ``store``, ``oauth2``, ``routing``, ``intake``, ``outbound``,
``tickets``, ``staff``, ``disputes``, ``reports``, ``pipeline``, ``errors``, ``clock``, ``units``;
imported only by ``cli``.
"""
