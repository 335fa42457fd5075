"""Buyer-seller disputes run as a relayed email chat with the marketplace's deadlines.

``route`` is the disputes mailbox's rule table, ``rules`` the pure state
machine (what may happen, and when), the other modules apply it: opening,
the relayed chat with both parties' addresses masked, deadlines, orders.

May import: ``tickets`` (a dispute's chat is a ticket of kind "dispute"), ``routing``, ``outbound``,
``store``, ``mail``, ``config``, ``units``, ``clock``, ``errors``.
"""
