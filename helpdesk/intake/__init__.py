"""Edges that take mail in: SMTP (aiosmtpd), IMAP (imapclient), Maildir, files.

A source's only job is to get the raw bytes stored durably (``spool``) and only
then acknowledge them (SMTP 250, IMAP move); everything after that is the
pipeline's. One module per outside library.

May import: ``config``, ``mail``, ``store``, ``oauth2`` (tokens for the IMAP login), ``errors``,
``clock``, ``units``; never the domains.
"""
