"""One exception tree for the whole helpdesk.

    HelpdeskError                 anything the helpdesk raises on purpose
    ├── ConfigError               config.toml is wrong: message names file, section, key
    │   └── TemplateError         a template is missing or does not render: message names the file
    ├── UserError                 a command-line user asked for something impossible
    │   └── NotFound              an unknown id (``no ticket T-99``)
    ├── TokenError                no OAuth2 access token: ``temporary`` says whether waiting helps
    ├── StoreError                the database refused (could not store a raw message, ...)
    │   ├── AlreadyOpen           a second open dispute for one order: another opening won the race
    │   └── TemporaryStoreError   waiting helps: the work stays pending, SMTP answers 4xx
    │       ├── StoreUnavailable  the database cannot be reached (connection lost, locked)
    │       └── StorageFull       the disk is full: the database or an attachment cannot be written
    └── DeliveryError             an outgoing mail could not be handed over
        ├── TemporaryDeliveryError    retry later (4xx, refused connection, timeout)
        └── PermanentDeliveryError    give up and record it (5xx)

The command line turns every ``HelpdeskError`` into one line on stderr and exit
status 1; anything else is a bug and is quarantined (pipeline) or logged.
"""


class HelpdeskError(Exception):
    """Base of every error the helpdesk raises deliberately."""


class ConfigError(HelpdeskError):
    """The configuration cannot be used; the message is the whole explanation."""


class UnknownMailbox(ConfigError, LookupError):
    """A mailbox name the config does not (or no longer) know."""


class TemplateError(ConfigError):
    """A template the helpdesk sends is missing or broken; found at start-up, never on a mail."""


class UserError(HelpdeskError):
    """A request from the command line that cannot be honoured."""


class NotFound(UserError):
    """An id that names nothing."""


class TokenError(HelpdeskError):
    """No access token could be had for a login (the token endpoint or the ``token_command``).

    ``temporary`` separates what waiting cures (the endpoint unreachable, timing
    out or answering 5xx) from what only a person can fix (a revoked refresh
    token, a wrong client secret, a failing command); the message is one line
    naming the mailbox and what to do, and never holds a secret or a token.
    """

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


class StoreError(HelpdeskError):
    """The database could not store something that must be stored."""


class AlreadyOpen(StoreError):
    """The database refused a second open dispute for one order (its unique ``open_order``):
    another opening committed between the check and the insert."""


class TemporaryStoreError(StoreError):
    """A store failure that cures itself (the server comes back, space is freed): nothing
    is quarantined or bounced for it; the work stays pending and is tried again."""


class StoreUnavailable(TemporaryStoreError):
    """The database cannot be reached now (connection lost, server down, file locked);
    the connection is reopened with back-off. SMTP answers ``451 4.3.0`` meanwhile."""


class StorageFull(TemporaryStoreError):
    """A local write failed for lack of space (``ENOSPC``, ``database or disk is full``);
    SMTP answers ``452 4.3.1`` meanwhile, and the message waits until space is back."""


class DeliveryError(HelpdeskError):
    """An outgoing message was not accepted by the transport."""


class TemporaryDeliveryError(DeliveryError):
    """Worth retrying later: 4xx replies, refused connections, timeouts."""


class PermanentDeliveryError(DeliveryError):
    """Not worth retrying: 5xx replies, invalid recipients."""
