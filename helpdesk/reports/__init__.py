"""What admins and the command line read: the digest and the listings.

May import: ``outbound`` (the digest is mailed), ``store``, ``config``, ``units``, ``clock``, ``errors``,
and the pure ``disputes.rules`` (the dispute states).
"""
