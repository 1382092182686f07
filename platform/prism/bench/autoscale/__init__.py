"""The autoscaling benchmark: a step-shaped load; replicas and TTFT over time."""
