"""The mirror agent: the app's process captures and hands off; a separate process does the rest.

Everything a mirror does after its hand-off (picking a destination, the circuit breakers, the
connection pools and TLS, sending, comparing the answers, the diff log, recording, and the live
``/compare`` page) runs in the agent, so that what a destination answers never reaches the app's
event loop, its interpreter lock or its memory. The modules, in the order a copy meets them:

1. ``protocol``  - the frames that cross the local socket, both ways, defined once.
2. ``handoff``   - the app's side: a copy handed off at ``close()`` without waiting; the agent's
   outcomes relayed into the middleware's stats; what a lost agent held counted ``agent_lost``.
3. ``supervise`` - where the socket lives (a directory only the user can enter), the lock that lets
   concurrent workers start one agent, and the start of a detached agent that outlives them.
4. ``server``    - the agent process (``wsgimirror agent``): each client's copies dispatched under the
   config they matched, through one runtime shared by every client.
5. ``dispatch``  - what happens to a copy after the hand-off: pick, send, compare, record.
6. ``runtime``   - what a process's mirrors share: the executor, the pools, the count in flight.

``dispatch`` and ``runtime`` run in the agent, or in the app's process with ``Agent.Mode`` in-process.

``Agent.Mode`` chooses: ``embedded`` (the default: the first middleware on a host starts an agent
for its config), ``external`` (a sidecar the operator runs, named by ``Agent.Socket``), or
``in-process`` (everything in the app's process, as before the agent).
"""
