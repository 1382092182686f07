"""The engine benchmark: Prism's engine and HF ``generate`` on one workload, in process."""
