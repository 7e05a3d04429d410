"""Side-by-side benchmarks of ssmfab against OpenSSH and plain Fabric through SSM tunnels: ``python -m bench``."""
