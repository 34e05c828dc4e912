"""The cluster lab (issue 20): a site of several nodes, each in a network namespace of its own."""
