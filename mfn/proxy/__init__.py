"""The rollout proxy: nginx in front of a deployment, its routes, rollouts and their controller."""
