"""Analysis: frames of a :class:`~evtkit.trace.Trace` turned into answers.

Causal chains (:mod:`.causal`), consumer lag (:mod:`.lag`), fan-out and the service graph
(:mod:`.fanout`), two traces side by side (:mod:`.compare`) and what looks wrong
(:mod:`.problems`). Each function takes a trace and returns a frame; ``Trace`` methods are
one-line hand-offs to them. Nothing here imports capture.
"""
