"""Configuration: ``config.toml`` read once at start into frozen settings.

- ``settings``: the frozen dataclasses; what the rest of the helpdesk imports.
- ``schema``: the converter engine (keys, sections, one-line errors); it knows
  no section of the helpdesk's.
- ``loader``: the helpdesk's sections and keys, and ``load_config``.

Everything else imports the config, so it stays at the bottom of the house.
May import: the standard library, ``helpdesk.errors``, ``helpdesk.units`` and its
own modules; nothing from the domains, the store or peewee.  Within the folder, ``schema`` imports
neither of the others and ``settings`` takes only its quoting from ``schema``.

Nothing is re-exported here: import each name from its module.
"""
