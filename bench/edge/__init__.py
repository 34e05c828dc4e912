"""The edge benchmark (`make bench-edge`): KEMI edge vs a native-config reference vs a ceiling."""
