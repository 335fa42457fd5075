"""Mail going out: rendering (Jinja2), the outbox (claims, retries), the transports.

Business code only queues notices (``notify``) in its own transaction; the
outbox later hands them to a transport (SMTP relay or Maildir).

May import: ``mail``, ``store``, ``oauth2`` (tokens for the relay's login), ``config``, ``clock``,
``errors``, ``units``; never a domain.
"""
