"""Edges that get raw bytes in durably, then acknowledge their side.

A source never parses or routes: it builds ``intake.Incoming`` values, hands
them to ``App.store`` and only after that returns does it acknowledge (SMTP
250, a Maildir file moved to ``cur/``, an IMAP flag).
"""
