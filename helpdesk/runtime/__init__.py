"""Running the helpdesk: the composition root, the service loop, the scheduler, the tick, ingest,
and its health (``check``, ``status``, ``metrics``, the templates' ``samples``).

``app`` is the only place that reads the config and decides which database,
transport and clock to use; ``service`` runs the sources, the pipeline, the
outbox and the scheduler together; ``tick`` fires due timers and hands each to
the domain whose subject it is. The one importer of ``schedule``. ``pipe`` is
``ingest -`` for an MTA (exit status: stored or not), ``reload`` applies a config
re-read on SIGHUP, ``sdnotify`` tells systemd, ``logs`` shapes the log lines;
``shipped`` finds the default templates and config.toml, which ``init_folder``
copies into a new folder.

May import: everything below it — ``config``, ``mail``, ``store``, ``routing``, ``intake``, ``outbound``,
``tickets``, ``staff``, ``disputes``, ``reports``, ``pipeline``, ``oauth2``, ``errors``, ``clock``,
``units``;
imported only by ``cli``.
"""
