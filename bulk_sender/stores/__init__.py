"""Durable stores shared between runs, behind small async interfaces, with their backends.

``ledger`` holds the audience ledger's interface (``typing.Protocol``) and the function that
opens one; ``ledger_sql`` its dialect-neutral SQL; every SQLite specific lives in ``sqlite_*.py``.
"""
