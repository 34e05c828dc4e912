"""`make bench-esl`: the ESL controller against the Event Socket stand-in, then the real FreeSWITCH."""
