"""The learner as a Ray actor, and weight publishing."""
