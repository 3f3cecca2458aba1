"""Small helpers every room uses: gevent detection and locks, files opened safely, text made printable,
throttled logs, pids, path patterns, HTTP syntax and listening sockets. Nothing here imports the rest."""
