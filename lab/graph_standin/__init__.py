"""A Graph API stand-in for the calling settings: a real HTTP server on loopback.

The tests, the lab and the sync benchmark talk to it with the same client that talks to
graph.facebook.com; see `state.py` for the rules it implements and `faults.py` for what it can
be made to get wrong.
"""

from lab.graph_standin.faults import FaultRule, RateLimiter
from lab.graph_standin.server import GraphStandin
from lab.graph_standin.state import GraphApiError, GraphState

__all__ = ["FaultRule", "GraphApiError", "GraphStandin", "GraphState", "RateLimiter"]
