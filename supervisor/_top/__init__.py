"""``supctl top``: a live view of supd's children, over the gRPC API alone (Health, Restart, Stop, Stream).

- ``model``: pure: rows and line rates from successive Health snapshots, short texts.
- ``control``: pure: what a key does in the view it is pressed in.
- ``plain``: the refreshing table for a stdout that is not a terminal, and ``--once``.
- ``terminal``: the keyboard: cbreak mode and key decoding.
- ``view``: the screen, drawn with rich.
- ``app``: the interactive loop: a Health poller, the log follower and requests in threads, keys on the main one.

Only ``supervisor._cli_top`` imports this package, and only when ``top`` runs.
"""
