"""Durable stores shared between runs, behind small async interfaces, with their backends.

``base`` holds the callback store's interface (``typing.Protocol``) and
:func:`~.base.open_callback_store`, ``ledger`` the audience ledger's and :func:`~.ledger.
open_ledger`; ``sql`` and ``ledger_sql`` the dialect-neutral SQL they run; every SQLite
specific lives in ``sqlite*.py``. Their errors are :class:`~bulk_sender.errors.StoreError`.
"""
