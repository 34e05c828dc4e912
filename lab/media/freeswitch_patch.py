"""Whether a FreeSWITCH install carries wa-sip's patches: the detection is the product's
(provisioning/freeswitch_patch.py, which `provision doctor` uses too); the lab, the tests and
the benches import it through here or from there."""

from __future__ import annotations

from provisioning.freeswitch_patch import MARKER, PATCHES, is_patched, patch_set

__all__ = ["MARKER", "PATCHES", "is_patched", "patch_set"]
