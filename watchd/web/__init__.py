"""The web dashboard (``[web]``): a live page of the queue and of each job, served by the daemon.

Rooms: :mod:`.settings` (the ``[web]`` config), :mod:`.security` (Host allowlist, bearer token,
CSRF, headers), :mod:`.feed` (the daemon's changes, coalesced, to open pages), :mod:`.views`
(what a page shows, read from the ledger and the daemon's live state), :mod:`.files` (outbox
files, contained), :mod:`.app` (routes and the server). Nothing here is imported unless the
dashboard is configured.
"""
