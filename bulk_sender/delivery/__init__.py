"""Delivery reports: what happened to a message after Kaleyra accepted it.

``parse`` turns Kaleyra's callbacks into events (pure), ``precedence`` folds a message's events
into one state (pure), ``codes`` explains Meta's and Kaleyra's failure codes, ``receiver`` is the
HTTP server that stores callbacks, ``merge`` joins them with a campaign's journal, ``funnel``
and ``html`` present the outcome, and ``report`` runs the ``report`` command.
"""
