"""Capture on the request path: which route a request matches (:mod:`.routing`), the tee of its body
(:mod:`.body`) and of the app's answer (:mod:`.answer`). Everything here runs in the app's process, inside the
request, and is bounded in memory and time."""
