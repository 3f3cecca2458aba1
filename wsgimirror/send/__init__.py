"""Picking and sending: the policies that choose a destination (:mod:`.pick`), each destination's circuit
breaker (:mod:`.breaker`), the mirrored request's head (:mod:`.head`), the executors that run mirrors off the
request path (:mod:`.executors`), the connection pools (:mod:`.pools`) and one exchange on the wire
(:mod:`.transport`)."""
