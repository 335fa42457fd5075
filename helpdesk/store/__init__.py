"""The only door to the database: schema, connection, transactions, and named queries.

Nothing outside this folder imports peewee, the models (``schema``) or the
prepared statements (``sql``): the rest of the helpdesk calls the functions of
the other modules here, which take and return plain values and dataclasses.

May import: ``peewee``/``playhouse``, ``config``, ``mail`` (parsed values), ``clock``, ``units``, ``errors``.
"""
