"""Local stand-ins for every service a mint needs, with fault injection. Dev and tests only."""
