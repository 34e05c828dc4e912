"""A FreeSWITCH stand-in that speaks mod_event_socket byte for byte (see ``server.py``)."""

from lab.esl_standin.scenarios import BicOutcome, MetaBehaviour, UicCall
from lab.esl_standin.server import FreeSwitchStandin, UicHandle

__all__ = ["BicOutcome", "FreeSwitchStandin", "MetaBehaviour", "UicCall", "UicHandle"]
