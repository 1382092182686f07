"""Autoscaling: the load each replica reports and the Serve policy that sizes the fleet."""
