"""`make bench-preflight`: call-permission pre-flight against Graph's rate limit, and what it
adds to `wa-esl originate` (issue 19). See run.py and bench/README.md."""
