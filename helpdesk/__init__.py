"""helpdesk: an email-driven helpdesk for a digital-goods marketplace."""

__version__ = "0.1.0"
