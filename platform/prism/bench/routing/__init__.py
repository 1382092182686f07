"""The routing benchmark: one workload on one fresh deployment per routing policy."""
