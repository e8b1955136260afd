"""Audience rules across campaigns: opt-outs, the repeat guard, the frequency cap, the
customer-service window and quiet hours, kept in a ledger shared by every campaign of an account.

``rules``, ``quiet``, ``keywords`` and ``content`` are pure; ``optout_files`` reads opt-out files;
``snapshot`` holds what the ledger knew when a run began, compactly; ``gate`` is what the engine
calls for each message; ``incoming`` is what the callback receiver calls for each customer's
message; ``commands`` is ``bulk-sender optout``.
"""
