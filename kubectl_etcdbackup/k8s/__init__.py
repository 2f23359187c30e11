"""Kubernetes side: the objects that run the agent in a cluster."""
