"""The loop: retrain triggers, the policy, replay, canary rollout, events and notices."""
