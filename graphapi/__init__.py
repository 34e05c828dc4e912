"""Meta's Graph API client, read by both sides: `provision` (settings, sync, permission
requests) and `wa-esl` (the call-permission pre-flight before a business-initiated call).

A package of its own, like siteconfig/, so that esl/ and provisioning/ never import each other:
it imports neither (and nothing from lab/).
"""
