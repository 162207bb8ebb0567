"""Learners (one file per algorithm) and the learner group.

Empty until the offline algorithms land (issue 6); see ../shared/DESIGN.md for the roles.
"""
