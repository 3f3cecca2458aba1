"""Shadow comparison: does the mirror answer like the app did?

The steps, in the order an answer takes them:

1. ``capture.answer`` - tee the app's answer as the server sends it; the transport fills the
   mirror's the same way.
2. ``trees``    - each answer as status, headers and a body tree (JSON, text, bytes, or a digest).
3. ``diff``     - the field differences between the two, by field path and kind.
4. ``endpoints`` - the request's endpoint name (``GET /users/{id}``).
5. ``analysis`` - counts per endpoint and field, candidate and baseline, and latencies.
6. ``verdicts`` - the statistics: regression, learning, noise, and slower.
7. ``difflog``  - the JSONL log of counts and examples; read back by ``report`` and ``html``.

``comparer`` runs steps 2 to 7 after a mirror's answer has arrived, in the agent (or in the app's process
with ``Agent.Mode`` in-process).
"""
