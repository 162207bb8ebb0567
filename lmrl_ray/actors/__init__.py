"""Ray actors that act: inference engines, rollout workers and simulator replicas.

Empty until the engines land (issue 5); see ../shared/DESIGN.md for the roles.
"""
