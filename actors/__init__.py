"""Ray actors of the sampling side: rollout actors and the replay table."""
