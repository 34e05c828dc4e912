"""The one site configuration both sides of the bundle read.

`provision` (the edge, the credential store, the rendered Kamailio and FreeSWITCH folders) and
`wa-esl` (the controller) take their settings from the same TOML file. The models live here, in
a package that imports neither of them, so neither side imports the other back:
`model` is the whole site file, `controller` the `[esl]` side of it (also usable alone by
`wa-esl --settings`), `listen_address` the `host:port` check both use.
"""
