"""Durable stores behind small async interfaces, with their backends.

``base`` holds the interfaces (``typing.Protocol``) and :func:`~.base.open_callback_store`;
``sql`` the dialect-neutral SQL they share; every SQLite specific lives in ``sqlite*.py``.
"""
