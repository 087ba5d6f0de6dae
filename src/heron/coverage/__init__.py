"""Service prediction, network-neutral: a propagation model (propagation.py) and the vectorised
link-margin computation over (transmitters x points) behind the coverage APIs (compute.py).
What a network's devices and receivers are (EIRP classes, sensitivity) lives with the network
(`network/sigfox/coverage.py`)."""
